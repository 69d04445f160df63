"""One config dataclass per dataset stage (generate, critique, sample, label, rlaif), for pipelines.

The stage modules take keyword arguments plus an `Engine` or `EngineConfig`; each class here is the
stage's own config with its inputs (`prompts`, `data`, `constitution`), its output (`out`) and its
engine(s) added as documented fields, and each `run_*` function calls the stage's Python API with it.
`engine_config` turns a stage's model and `EngineSpec` into the `EngineConfig` the stages open.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cai.critique.config import CritiqueConfig
from cai.critique.run import critique
from cai.data.sources import DEFAULT_PROMPTS
from cai.engine.base import SamplingParams
from cai.engine.config import EngineConfig
from cai.errors import InputError
from cai.feedback.config import LabelConfig, SampleConfig
from cai.feedback.label import label, rlaif
from cai.feedback.sample import sample
from cai.generate import generate


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
        if self.backend == "openai" and not self.base_urls:
            raise InputError("the openai backend needs base_urls", field="base_urls")
        if self.max_model_len < 16:
            raise InputError("must be >= 16", field="max_model_len")


def engine_config(model: str, spec: EngineSpec) -> EngineConfig:
    """The `EngineConfig` of a stage's model run as `spec` describes (the stage names the model, the spec
    how to run it, so one spec can serve the policy and, in `judge_engine`, the judge)."""
    return EngineConfig(model=model, backend=spec.backend, dtype=spec.dtype, max_model_len=spec.max_model_len,
                        base_urls=spec.base_urls, cache=spec.cache, no_cache=spec.no_cache, engine_args=dict(spec.args))


def core(cls: type, cfg: Any) -> Any:
    """The stage's own config (`cls`) out of a pipeline config that extends it."""
    return cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls)})


def _check_out(out: str) -> None:
    if not out:
        raise InputError("is required (the pipeline sets it)", field="out")


# ---- generate ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GenerateStage:
    """`generate`: answer a prompt set with a model (the `responses` config)."""

    out: str = ""
    """Output dataset directory (set by the pipeline)."""
    model: str = "smollm2-135m"
    """Model: built-in alias, local HF directory, hub id, or an earlier stage (`${stages.sft}`)."""
    engine: EngineSpec = field(default_factory=EngineSpec)
    """How to run the model."""
    prompts: str = DEFAULT_PROMPTS
    """JSONL/CSV/Parquet file, dataset directory or hub id."""
    column: str = "prompt"
    """Prompt column."""
    limit: int = 0
    """Use only the first N prompts (0 = all)."""
    sampling: SamplingParams = field(default_factory=lambda: SamplingParams(max_tokens=256))
    """Sampling of the answers (temperature, top_p, max_tokens, n, stop)."""
    system: str | None = None
    """System prompt."""
    seed: int = 0
    """Seeds every request (per prompt id)."""

    def __post_init__(self):
        if self.limit < 0:
            raise InputError("must be >= 0", field="limit")


def run_generate(cfg: GenerateStage) -> dict[str, Any]:
    _check_out(cfg.out)
    return generate(prompts=cfg.prompts, out=cfg.out, params=cfg.sampling, column=cfg.column, seed=cfg.seed,
                    system=cfg.system, limit=cfg.limit or None, engine=engine_config(cfg.model, cfg.engine))


# ---- critique ---------------------------------------------------------------------------------------------

@dataclass
class CritiqueStage(CritiqueConfig):
    """`critique` (SL-CAI): answer, then critique and revise for `rounds` rounds (`sft`, `prefs`, `trace`)."""

    out: str = ""
    """Output dataset directory (set by the pipeline)."""
    model: str = "smollm2-135m"
    """The model that answers, critiques and revises."""
    engine: EngineSpec = field(default_factory=EngineSpec)
    """How to run the model."""
    constitution: str = "harmless"
    """Built-in constitution name or YAML path (its critique principles and few-shot examples are used)."""
    prompts: str = DEFAULT_PROMPTS
    """Red-team prompts: JSONL/CSV/Parquet file, dataset directory or hub id."""
    column: str = "prompt"
    """Prompt column."""
    limit: int = 0
    """Use only the first N prompts (0 = all)."""

    def __post_init__(self):
        super().__post_init__()
        if self.limit < 0:
            raise InputError("must be >= 0", field="limit")


def run_critique(cfg: CritiqueStage) -> dict[str, Any]:
    _check_out(cfg.out)
    return critique(prompts=cfg.prompts, out=cfg.out, constitution=cfg.constitution, config=core(CritiqueConfig, cfg),
                    column=cfg.column, limit=cfg.limit or None, engine=engine_config(cfg.model, cfg.engine))


# ---- sample, label, rlaif ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class SampleStage(SampleConfig):
    """`sample`: K responses per prompt from the policy, paired (`samples`, `pairs`)."""

    out: str = ""
    """Output dataset directory (set by the pipeline)."""
    model: str = "smollm2-135m"
    """The policy that samples."""
    engine: EngineSpec = field(default_factory=EngineSpec)
    """How to run the policy."""
    prompts: str = DEFAULT_PROMPTS
    """Prompts: JSONL/CSV/Parquet file, dataset directory or hub id."""
    column: str = "prompt"
    """Prompt column."""
    limit: int = 0
    """Use only the first N prompts (0 = all)."""


def run_sample(cfg: SampleStage) -> dict[str, Any]:
    _check_out(cfg.out)
    return sample(prompts=cfg.prompts, out=cfg.out, config=core(SampleConfig, cfg), column=cfg.column,
                  limit=cfg.limit or None, engine=engine_config(cfg.model, cfg.engine))


@dataclass(frozen=True)
class LabelStage(LabelConfig):
    """`label`: AI preference labels for pairs, from a judge's option log-probs (`prefs`)."""

    out: str = ""
    """Output dataset directory (set by the pipeline)."""
    data: str = ""
    """Pairs to label: a `sample` stage (`${stages.sample}`) or a table with prompt, response_a, response_b."""
    judge: str = "smollm2-135m"
    """The feedback model; may differ from (and be stronger than) the policy."""
    engine: EngineSpec = field(default_factory=EngineSpec)
    """How to run the judge (e.g. backend: openai with base_urls for a served stronger judge)."""
    constitution: str = "harmless"
    """Built-in constitution name or YAML path (its comparison principles are used)."""

    def __post_init__(self):
        super().__post_init__()
        if not self.data:
            raise InputError("is required: the pairs to label, e.g. ${stages.sample}", field="data")


def run_label(cfg: LabelStage) -> dict[str, Any]:
    _check_out(cfg.out)
    return label(data=cfg.data, out=cfg.out, constitution=cfg.constitution, config=core(LabelConfig, cfg),
                 engine=engine_config(cfg.judge, cfg.engine))


@dataclass(frozen=True)
class RlaifStage:
    """`rlaif`: sample from the policy, pair and label with the judge, in one stage (`samples`, `pairs`, `prefs`)."""

    out: str = ""
    """Output dataset directory (set by the pipeline)."""
    model: str = "smollm2-135m"
    """The policy that samples."""
    engine: EngineSpec = field(default_factory=EngineSpec)
    """How to run the policy."""
    judge: str = ""
    """The feedback model; empty means the policy judges itself (one engine serves both)."""
    judge_engine: EngineSpec = field(default_factory=EngineSpec)
    """How to run the judge."""
    constitution: str = "harmless"
    """Built-in constitution name or YAML path."""
    prompts: str = DEFAULT_PROMPTS
    """Prompts: JSONL/CSV/Parquet file, dataset directory or hub id."""
    column: str = "prompt"
    """Prompt column."""
    limit: int = 0
    """Use only the first N prompts (0 = all)."""
    sample: SampleConfig = field(default_factory=SampleConfig)
    """Sampling and pairing."""
    label: LabelConfig = field(default_factory=LabelConfig)
    """Labelling."""


def run_rlaif(cfg: RlaifStage) -> dict[str, Any]:
    _check_out(cfg.out)
    policy = engine_config(cfg.model, cfg.engine)
    judge = engine_config(cfg.judge or cfg.model, cfg.judge_engine if cfg.judge else cfg.engine)
    return rlaif(prompts=cfg.prompts, out=cfg.out, constitution=cfg.constitution, sample_config=cfg.sample,
                 label_config=cfg.label, column=cfg.column, limit=cfg.limit or None, policy=policy,
                 judge=judge)


# ---- trainers -----------------------------------------------------------------------------------------------

def has_checkpoint(output_dir: str | Path) -> bool:
    """A trainer's output dir holds a finished checkpoint (`checkpoints/step-N/state.json`): resume from it."""
    return any((p / "state.json").is_file() for p in (Path(output_dir) / "checkpoints").glob("step-*"))
