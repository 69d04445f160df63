"""Engine sizing on a machine without a GPU (`cai.engine.memory`, `cai.evaluate.schedule`): the KV arithmetic
against hand-computed numbers, the side-by-side decision on fake memory figures, and the SIGKILL message."""
import json
import subprocess

import pytest

from cai.engine import memory, vllm_engine
from cai.engine.config import EngineSpec
from cai.errors import InputError
from cai.evaluate import schedule
from cai.evaluate.config import ValuesConfig
from cai.evaluate.values import ChildError, _answer_children

GiB = 2**30
SMOL = {"num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64,
        "hidden_size": 576, "dtype": "float32"}
MEMINFO = "MemTotal:       24576000 kB\nMemFree:         1000000 kB\nMemAvailable:    6000000 kB\n"


def _model(tmp_path, weights_bytes=538_090_408, config=SMOL):
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(config))
    with open(d / "model.safetensors", "wb") as f:  # only its size is read
        f.truncate(weights_bytes)
    return d


def test_kv_bytes_per_token_by_hand():
    assert memory.kv_bytes_per_token(SMOL, 2) == 30 * 2 * 3 * 64 * 2 == 23_040  # SmolLM2-135M, bf16
    assert memory.kv_bytes_per_token(SMOL, 4) == 46_080
    # no num_key_value_heads / head_dim: every head keeps K and V, head_dim = 64 / 4 = 16
    assert memory.kv_bytes_per_token({"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 64}, 4) \
        == 2 * 2 * 4 * 16 * 4 == 1024


def test_kv_cache_need_in_whole_blocks_with_headroom():
    # 90 sequences of 1024 tokens = 32 blocks of 32 each: 92,160 tokens x 23,040 B x 1.2
    assert memory.kv_cache_need(23_040, 1024, 90) == int(92_160 * 23_040 * 1.2) == 2_548_039_680
    assert memory.kv_cache_need(100, 33, 1, headroom=1.0) == 64 * 100  # 33 tokens take two 32-token blocks
    assert memory.kv_cache_need(100, 16, 0, block_size=16, headroom=1.0) == 1600  # never less than one sequence


def test_weights_in_the_dtype_they_load_in(tmp_path):
    d = _model(tmp_path)
    assert memory.weights_bytes(d, 4) == 538_090_408  # stored fp32
    assert memory.weights_bytes(d, 2) == 269_045_204
    need = memory.model_need(d, "float32", 1024, 90)
    assert need == {"weights": 538_090_408, "kv": int(92_160 * 46_080 * 1.2),
                    "total": 538_090_408 + int(92_160 * 46_080 * 1.2) + int(1.5 * GiB)}


def test_meminfo_and_the_size_an_engine_takes():
    assert memory.parse_meminfo(MEMINFO)["MemAvailable"] == 6_000_000 * 1024
    assert memory.machine_memory(MEMINFO) == (6_000_000 * 1024, 24_576_000 * 1024)
    one = 32 * 32 * 23_040  # one 1024-token sequence
    # plenty left: the need itself
    assert memory.size_kv_cache(2_548_039_680, one_seq=one, weights=269_045_204, available=20 * GiB,
                                total=24 * GiB, cap=0.3) == 2_548_039_680
    # 0.3 x 24 GiB = 7.2 GiB caps a need of 9 GiB
    assert memory.size_kv_cache(9 * GiB, one_seq=one, weights=0, available=20 * GiB, total=24 * GiB,
                                cap=0.3) == int(0.3 * 24 * GiB)
    # 3 GiB available: 3 - 0.25 (weights) - 1.5 (overhead) - 1 (reserve) = 0.25 GiB left
    assert memory.size_kv_cache(2_548_039_680, one_seq=one, weights=GiB // 4, available=3 * GiB,
                                total=24 * GiB, cap=0.3) == GiB // 4
    with pytest.raises(InputError, match=r"engine.max_model_len: not enough memory .* needs 22 MiB of KV cache, "
                                         r"and 0 MiB is left .*\(MemAvailable 2.5 GiB\)"):
        memory.size_kv_cache(2_548_039_680, one_seq=one, weights=GiB // 4, available=int(2.5 * GiB),
                             total=24 * GiB, cap=0.3)


def test_vllm_engine_sizes_its_kv_cache_from_the_job(tmp_path, monkeypatch):
    d = _model(tmp_path)
    monkeypatch.setattr(vllm_engine, "machine_memory", lambda meminfo=None: (20 * GiB, 24 * GiB))
    monkeypatch.setenv("CAI_VLLM_CPU_MEM", "0.3")
    assert vllm_engine.cpu_kv_cache_bytes(d, "bfloat16", 1024, seqs=90) == 2_548_039_680
    # without a hint: vLLM's 256 sequences of 1024 tokens, 6.75 GiB x 1.2, under the 7.2 GiB cap
    assert vllm_engine.cpu_kv_cache_bytes(d, "bfloat16", 1024) == int(256 * 1024 * 23_040 * 1.2)
    monkeypatch.setattr(vllm_engine, "machine_memory", lambda meminfo=None: (3 * GiB, 24 * GiB))
    assert vllm_engine.cpu_kv_cache_bytes(d, "bfloat16", 1024, seqs=90) == 3 * GiB - 269_045_204 - int(2.5 * GiB)


def test_the_two_sides_run_side_by_side_only_when_both_fit(tmp_path, monkeypatch):
    d = _model(tmp_path)
    cfg = ValuesConfig(model=str(d), baseline=str(d), out=str(tmp_path / "o"),
                       engine=EngineSpec(backend="vllm", max_model_len=1024, dtype="float32"))
    each = 538_090_408 + int(92_160 * 46_080 * 1.2) + int(1.5 * GiB)  # 7,244,782,504 B = 6.75 GiB
    assert schedule.side_need(cfg, "model", 90) == each == 7_244_782_504
    fixed = ValuesConfig(model=str(d), baseline=str(d), out="o", engine=EngineSpec(
        backend="vllm", max_model_len=1024, dtype="float32", args={"kv_cache_memory_bytes": 536_870_912}))
    assert schedule.side_need(fixed, "baseline", 90) == 538_090_408 + 536_870_912 + int(1.5 * GiB)
    both, apart = [["model", "baseline"]], [["model"], ["baseline"]]
    for available, groups in [(2 * each + GiB, both), (2 * each + GiB - 1, apart), (16 * GiB, both), (12 * GiB, apart)]:
        monkeypatch.setattr(memory, "machine_memory", lambda meminfo=None, a=available: (a, 24 * GiB))
        monkeypatch.setattr(schedule, "_on_gpu", lambda: False)
        plan = schedule.answer_plan(cfg, 90)
        assert plan.groups == groups, (available, plan)
    assert "one after the other: both engines would need 13.5 GiB, 12.0 GiB available" == plan.reason
    assert schedule.plan_answers({"model": 1, "baseline": 1}, 100 * GiB, gpu_shared=True).groups == \
        [["model"], ["baseline"]]
    with pytest.raises(InputError, match=r"^.*nope: baseline: model path does not exist"):
        schedule.side_need(ValuesConfig(model=str(d), baseline=str(tmp_path / "nope"), out="o"), "baseline", 90)


def test_sigkill_is_named_as_the_oom_killer(tmp_path, monkeypatch):
    msg = memory.killed_message(-9, "the stage process", meminfo=MEMINFO)
    assert msg.startswith("the stage process was killed by SIGKILL (exit -9), most likely by the kernel's "
                          "out-of-memory killer (5.7 GiB of 23.4 GiB available now)")
    assert "engine.args.kv_cache_memory_bytes" in msg and "engine.max_model_len" in msg and "\n" not in msg
    assert memory.killed_message(137, "x", meminfo=MEMINFO).startswith("x was killed by SIGKILL (exit 137)")
    assert memory.killed_message(1, "x") is None and memory.killed_message(-15, "x") is None
    # an answering child that dies by SIGKILL: eval values fails with that line
    monkeypatch.setattr("cai.evaluate.values._answer_cmd", lambda *a: ["bash", "-c", "kill -KILL $$"])
    cfg = ValuesConfig(model="m1", baseline="m2", out=str(tmp_path))
    with pytest.raises(ChildError) as e:
        _answer_children(cfg, ["model"], tmp_path / "p.jsonl", {"model": tmp_path / "a"})
    assert str(e.value).startswith("model (m1): its `cai generate` process was killed by SIGKILL (exit -9), "
                                   "most likely by the kernel's out-of-memory killer") and e.value.exit_code == 1
    assert subprocess.run(["bash", "-c", "kill -KILL $$"]).returncode == -9  # what the harness relies on
