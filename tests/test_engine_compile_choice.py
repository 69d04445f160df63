"""vLLM's choices on CPU: compile only jobs big enough to pay back the compile (`CPU_COMPILE_MIN_TOKENS`),
bf16 for text-only jobs where the CPU computes it natively, 32-token KV blocks; and a start that vLLM
refuses is a one-line input error."""
from __future__ import annotations

import pytest

import cai.engine.vllm_engine as vllm_engine
import cai.stage
from cai.critique.config import CritiqueConfig
from cai.engine.config import EngineConfig
from cai.engine.vllm_engine import CPU_COMPILE_MIN_TOKENS, compile_on_cpu, cpu_dtype, cpuinfo_has_bf16
from cai.errors import InputError


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
    assert seen[2][1].get("work_tokens") is None


def test_text_only_jobs_run_bf16_on_a_cpu_that_has_it(monkeypatch):
    x86 = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni\n"
    assert cpuinfo_has_bf16(x86) and cpuinfo_has_bf16("Features\t: fp asimd bf16 i8mm\n")
    assert not cpuinfo_has_bf16("flags\t\t: fpu sse avx2 avx512f\n") and not cpuinfo_has_bf16("")
    monkeypatch.setattr(vllm_engine, "cpu_has_bf16", lambda: True)
    assert (cpu_dtype(text_only=True), cpu_dtype(text_only=False)) == ("bfloat16", "float32")
    monkeypatch.setattr(vllm_engine, "cpu_has_bf16", lambda: False)
    assert (cpu_dtype(text_only=True), cpu_dtype(text_only=False)) == ("float32", "float32")
    # the stage says whether its job is text-only; open_engine hands it to vLLM
    seen = []
    monkeypatch.setattr(cai.stage, "make_engine", lambda backend, model, **kw: seen.append(kw) or object())
    monkeypatch.setattr(cai.stage, "CachedEngine", lambda engine, cache: engine)
    cai.stage.open_engine(EngineConfig(model="m", backend="vllm", no_cache=True), text_only=True)
    cai.stage.open_engine(EngineConfig(model="m", backend="vllm", no_cache=True))
    assert [kw["text_only"] for kw in seen] == [True, False]


def test_text_stages_ask_for_text_only_and_judges_do_not(monkeypatch, tmp_path):
    """Which stages open their engine text-only: the samplers yes, anything that reads log-probs no."""
    import cai.contrast.run
    import cai.critique.run
    import cai.feedback.sample
    import cai.generate.run
    calls = []

    def fake_open(engine, **kw):
        calls.append(kw.get("text_only", False))
        raise RuntimeError("stop here")

    for mod in (cai.critique.run, cai.generate.run, cai.feedback.sample):
        monkeypatch.setattr(mod, "as_engine", fake_open)
    monkeypatch.setattr(cai.contrast.run, "open_engine", lambda cfg, **kw: fake_open(cfg, **kw))
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "hi"}\n')
    cfg = EngineConfig(model="m", backend="vllm", no_cache=True)
    from cai.contrast.config import ContrastConfig
    from cai.engine.base import SamplingParams
    from cai.feedback.config import SampleConfig
    runs = [lambda: cai.critique.run.critique(prompts=str(prompts), out=tmp_path / "c", engine=cfg, progress=False),
            lambda: cai.generate.run.generate(prompts=str(prompts), out=str(tmp_path / "g"), params=SamplingParams(),
                                              engine=cfg),
            lambda: cai.generate.run.generate(prompts=str(prompts), out=str(tmp_path / "gl"), engine=cfg,
                                              params=SamplingParams(logprobs=True)),
            lambda: cai.feedback.sample.sample(prompts=str(prompts), out=str(tmp_path / "s"), config=SampleConfig(),
                                               engine=cfg),
            lambda: cai.contrast.run._open(ContrastConfig())]
    for run in runs:
        with pytest.raises(RuntimeError, match="stop here"):
            run()
    assert calls == [True, True, False, True, True]


def test_cpu_kv_blocks_are_32_tokens_and_a_refused_start_is_an_input_error(tiny_model):
    # vLLM's CPU attention takes multiples of 32 only: a user's block_size=16 must read as their mistake,
    # in one line, not as a traceback
    assert vllm_engine.CPU_BLOCK_SIZE == 32
    with pytest.raises(InputError, match=r"^engine: vLLM would not start with these settings \(ValueError: .*16"):
        vllm_engine.VLLMEngine(str(tiny_model), max_model_len=512, kv_cache_memory_bytes=64 * 2**20, block_size=16)
