"""`EngineConfig`: which model to run and how, as one value every stage takes (CLI flags, YAML and pipeline
stages all become one of these; `cai.stage.open_engine` opens it behind the request cache).

`EngineSpec` is the `engine:` section of a stage config: how to run a model the stage names elsewhere
(`model`, `judge`); `engine_config` joins the two into the `EngineConfig` the stage opens."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from cai.errors import InputError

BACKENDS = ("vllm", "hf", "openai")


@dataclass(frozen=True)
class EngineConfig:
    """A model and the engine that runs it. A stage that needs a second model (a judge) takes a second one."""

    model: str = "smollm2-135m"
    """Built-in alias, local HF directory or hub id (for the openai backend: the served model's name)."""
    backend: Literal["", "vllm", "hf", "openai"] = ""
    """vllm (in-process), hf (transformers) or openai (an OpenAI-compatible server); empty picks vllm when
    it is installed, else hf."""
    dtype: str = "auto"
    """Weight dtype for vllm/hf (auto, float32, bfloat16, ...)."""
    max_model_len: int = 4096
    """Context length the engine allows (prompt + completion)."""
    base_urls: tuple[str, ...] = ()
    """openai backend: server URLs (requests are spread over them)."""
    cache: str = ""
    """Request cache (SQLite); empty means ~/.cache/cai/requests.sqlite (or $CAI_REQUEST_CACHE)."""
    no_cache: bool = False
    """Neither read nor write the request cache."""
    engine_args: dict[str, Any] = field(default_factory=dict)
    """Extra backend arguments passed through, e.g. {tensor_parallel_size: 2, gpu_memory_utilization: 0.8}."""

    def __post_init__(self):
        if isinstance(self.base_urls, (list, str)):
            object.__setattr__(self, "base_urls", tuple([self.base_urls] if isinstance(self.base_urls, str)
                                                        else self.base_urls))
        if not self.model:
            raise InputError("is required", field="model")
        _check(self.backend, self.base_urls, self.max_model_len)

    def replace(self, **changes: Any) -> EngineConfig:
        """A copy with `changes` (e.g. the judge: `policy.replace(model="judge-model")`)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class EngineSpec:
    """How to run a model: backend and its arguments (the model itself is the stage's `model`/`judge`)."""

    backend: Literal["", "vllm", "hf", "openai"] = ""
    """vllm, hf (transformers) or openai (an OpenAI-compatible server); empty picks vllm when installed."""
    base_urls: tuple[str, ...] = ()
    """openai backend: server URLs (requests are spread over them)."""
    max_model_len: int = 4096
    """Context length the engine allows (prompt + completion)."""
    dtype: str = "auto"
    """Weight dtype for vllm/hf (auto, float32, bfloat16, ...)."""
    args: dict[str, Any] = field(default_factory=dict)
    """Extra backend arguments passed through, e.g. {tensor_parallel_size: 2, gpu_memory_utilization: 0.8}."""
    cache: str = ""
    """Request cache (SQLite); empty means ~/.cache/cai/requests.sqlite (or $CAI_REQUEST_CACHE)."""
    no_cache: bool = False
    """Neither read nor write the request cache."""

    def __post_init__(self):
        _check(self.backend, self.base_urls, self.max_model_len)


def _check(backend: str, base_urls: tuple[str, ...], max_model_len: int) -> None:
    """What `EngineConfig` and `EngineSpec` both require of their fields."""
    if backend and backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}", field="backend")
    if backend == "openai" and not base_urls:
        raise InputError("the openai backend needs base_urls", field="base_urls")
    if max_model_len < 16:
        raise InputError("must be >= 16", field="max_model_len")


def engine_config(model: str, spec: EngineSpec) -> EngineConfig:
    """The `EngineConfig` of a stage's model run as `spec` describes (the stage names the model, the spec
    how to run it, so one spec can serve the policy and, in `judge_engine`, the judge)."""
    return EngineConfig(model=model, backend=spec.backend, dtype=spec.dtype, max_model_len=spec.max_model_len,
                        base_urls=spec.base_urls, cache=spec.cache, no_cache=spec.no_cache, engine_args=dict(spec.args))
