"""`cai train ppo|rloo` on mistaken configs: one line naming the file or key, exit 2, before any model loads,
and no output directory left behind. The judge's engine is a full engine section."""
from __future__ import annotations

import pytest
from conftest import run_cai

from cai.engine.config import EngineSpec
from cai.errors import InputError
from cai.train.config import load_config
from cai.train.ppo_config import PPOConfig, RewardConfig


def _one_line(r, *needles):
    """Exit 2 and one error line (a trainer's progress lines may precede it), no traceback."""
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("cai: error: ")]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_judge_engine_is_an_engine_section(tmp_path):
    f = tmp_path / "ppo.yaml"
    f.write_text("reward:\n  kind: judge\n  model: smollm2-135m\n  judge_engine:\n    backend: openai\n"
                 "    base_urls: [http://127.0.0.1:8000/v1]\n    max_model_len: 1024\n")
    cfg = load_config(PPOConfig, str(f), [])
    assert cfg.reward.judge_engine == EngineSpec(backend="openai", base_urls=("http://127.0.0.1:8000/v1",),
                                                 max_model_len=1024, dtype="float32", no_cache=True)
    # a backend name alone keeps working; hf runs fp32 by default
    assert RewardConfig(kind="judge", model="m", judge_engine="hf").judge_engine == \
        EngineSpec(backend="hf", dtype="float32")
    assert RewardConfig(kind="judge", model="m").judge_engine.backend == "hf"
    for body, where in [("    backend: openai\n", "ppo.yaml:5:5: reward.judge_engine.base_urls: the openai backend "
                                                  "needs base_urls"),
                        ("    backnd: vllm\n", "ppo.yaml:5:13: reward.judge_engine.backnd: unknown key"),
                        ("    backend: ''\n", "reward.judge_engine.backend: name the backend")]:
        f.write_text("reward:\n  kind: judge\n  model: smollm2-135m\n  judge_engine:\n" + body)
        with pytest.raises(InputError) as e:
            load_config(PPOConfig, str(f), [])
        assert where in str(e.value), str(e.value)
    with pytest.raises(InputError, match="reward.judge_engine: vLLM allows one engine per process"):
        PPOConfig(reward=RewardConfig(kind="judge", model="m", judge_engine="vllm"))


@pytest.mark.parametrize("overrides,needles", [
    (["reward.kind=judge", "reward.model=smollm2-135m", "reward.judge_engine=openai"],
     ["reward.judge_engine", "the openai backend needs base_urls", "(from the command line)"]),
    (["reward.kind=judge", "reward.model=smollm2-135m", "reward.judge_engine=opnai"],
     ["reward.judge_engine: must be one of hf, vllm, openai, got 'opnai'"]),
    (["reward.kind=judge", "reward.model=smollm2-135m", "reward.judge_engine.backend=openai"],
     ["reward.judge_engine.base_urls", "needs base_urls"]),
    (["reward.kind=judge", "reward.model=smollm2-135m", "reward.judge_engine=vllm"],
     ["reward.judge_engine: vLLM allows one engine per process"]),
    (["reward.kind=judge", "reward.model="], ["reward.model", "kind judge needs a model"]),
    (["reward.kinds=rm"], ["reward.kinds: unknown key"]),
    (["rollout.kv_cache_mb=8"], ["rollout.kv_cache_mb: must be >= 16"]),
    (["ppo.num_minibatches=3"], ["ppo.num_minibatches", "do not split into 3 minibatches"]),
])
def test_mistaken_ppo_configs_are_one_line_before_loading(tmp_path, overrides, needles):
    out = tmp_path / "out"
    r = run_cai("train", "ppo", "--config", "configs/ppo.yaml", f"run.output_dir={out}", *overrides)
    _one_line(r, *needles)
    assert not out.exists()


def test_missing_reward_model_and_empty_prompts(tmp_path, tiny_model):
    out = tmp_path / "out"
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    base = ["train", "rloo", "--config", "configs/rloo.yaml", f"model={tiny_model}", f"run.output_dir={out}",
            "run.batch_size=2", "ppo.num_minibatches=1", "data.limit=2"]
    _one_line(run_cai(*base, "reward.kind=rm", f"reward.model={tmp_path / 'no-rm'}"), "no-rm", "reward.model")
    _one_line(run_cai(*base, f"data.path={empty}"), "empty.jsonl", "data.path", "no prompts")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.jsonl"]
