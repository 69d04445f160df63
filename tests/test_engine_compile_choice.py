"""vLLM on CPU compiles only jobs big enough to pay back the compile (`CPU_COMPILE_MIN_TOKENS`)."""
from __future__ import annotations

import cai.stage
from cai.critique.config import CritiqueConfig
from cai.engine.config import EngineConfig
from cai.engine.vllm_engine import CPU_COMPILE_MIN_TOKENS, compile_on_cpu


def test_compile_only_for_big_jobs():
    assert not compile_on_cpu(None) and not compile_on_cpu(0)
    assert not compile_on_cpu(CPU_COMPILE_MIN_TOKENS - 1) and compile_on_cpu(CPU_COMPILE_MIN_TOKENS)
    # the critique job (150 red-team prompts, 2 rounds: 82k tokens at most) runs eagerly, as measured best;
    # a job three times its size compiles
    per_conv = CritiqueConfig().token_budget()
    assert per_conv == 96 + 2 * (64 + 160)
    assert not compile_on_cpu(150 * per_conv) and compile_on_cpu(3 * 150 * per_conv)


def test_open_engine_passes_the_job_size_to_vllm_only(monkeypatch):
    seen = []
    monkeypatch.setattr(cai.stage, "make_engine", lambda backend, model, **kw: seen.append((backend, kw)) or object())
    monkeypatch.setattr(cai.stage, "CachedEngine", lambda engine, cache: engine)
    cai.stage.open_engine(EngineConfig(model="m", backend="vllm", no_cache=True), work_tokens=70_000)
    cai.stage.open_engine(EngineConfig(model="m", backend="hf", no_cache=True), work_tokens=70_000)
    cai.stage.open_engine(EngineConfig(model="m", backend="vllm", no_cache=True))
    assert seen[0][0] == "vllm" and seen[0][1]["work_tokens"] == 70_000
    assert seen[1][0] == "hf" and "work_tokens" not in seen[1][1]
    assert "work_tokens" not in seen[2][1]
