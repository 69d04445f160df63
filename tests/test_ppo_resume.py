"""PPO checkpoints and --resume: kill -9 a `cai train ppo` run part-way, resume it, and get the same final
weights as an uninterrupted run (seeded rollouts, dropout off, CPU). Also: the YAML reward callable
(`reward.fn: file.py:function`) and config errors in the one-line FILE:LINE:COL form."""
import json
import subprocess
import sys

from cai.testing import make_tiny_model
from tests.conftest import kill9_at_checkpoint_then_resume, max_weight_diff

REWARD = "def reward(prompts, responses):\n    return [r.count('e') / (1 + len(r)) for r in responses]\n"


def _weights(path):
    from safetensors.torch import load_file
    return load_file(str(path / "model.safetensors"))


def _setup(tmp_path):
    tiny = make_tiny_model()
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"prompt": f"Name a {w}."}) + "\n"
                                              for w in ("colour", "fruit", "city", "river", "tree", "song")))
    (tmp_path / "rw.py").write_text(REWARD)
    return [f"model={tiny}", f"data.path={tmp_path / 'p.jsonl'}", "reward.kind=callable",
            f"reward.fn={tmp_path / 'rw.py'}:reward", "rollout.engine=hf", "rollout.max_new_tokens=6",
            "ppo.epochs=1", "ppo.num_minibatches=2", "ppo.penalize_no_eos=false", "run.batch_size=2",
            "run.micro_batch_size=2", "run.max_steps=4", "run.save_every=2", "run.progress=false",
            "optim.lr=1e-3", "monitor.sample_every=1"]


def test_kill9_then_resume_matches_uninterrupted(tmp_path):
    common = _setup(tmp_path)
    cmd = [sys.executable, "-m", "cai.cli", "train", "ppo", *common]

    # 1. uninterrupted run
    from cai.train import PPOConfig, load_config
    from cai.train.ppo import train
    full = train(load_config(PPOConfig, None, [*common, f"run.output_dir={tmp_path / 'full'}"]))

    # 2. the same run, killed with SIGKILL once the step-2 checkpoint exists; 3. resumed from it
    part = tmp_path / "part"
    resumed = kill9_at_checkpoint_then_resume(cmd, part, step=2, step_delay=1.5, timeout=600)
    worst = max_weight_diff(_weights(full), resumed)
    assert worst <= 1e-5, worst
    steps = [json.loads(x)["step"] for x in (part / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    sample_steps = sorted({json.loads(x)["step"] for x in (part / "samples.jsonl").read_text().splitlines()})
    assert sample_steps == [1, 2, 3, 4]  # samples written by the killed run after its checkpoint are dropped
    ra = [json.loads(x)["reward/score"] for x in (full / "metrics.jsonl").read_text().splitlines()]
    rb = [json.loads(x)["reward/score"] for x in (part / "metrics.jsonl").read_text().splitlines()]
    assert max(abs(x - y) for x, y in zip(ra, rb)) < 1e-6  # the same rollouts after the resume


def test_ppo_config_errors_are_one_line_with_file_line_col(tmp_path):
    cfg = tmp_path / "ppo.yaml"
    cfg.write_text("model: x\nreward:\n  kind: rm\nppo:\n  clip: 0\n")
    r = subprocess.run([sys.executable, "-m", "cai.cli", "train", "ppo", "--config", str(cfg)],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 2 and r.stderr.strip() == f"cai: error: {cfg}:3:3: reward.model: kind rm needs a model", \
        r.stderr
    cfg.write_text("model: x\nppo:\n  clip: 0\n")
    r = subprocess.run([sys.executable, "-m", "cai.cli", "train", "ppo", "--config", str(cfg)],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 2 and r.stderr.strip() == f"cai: error: {cfg}:3:9: ppo.clip: must be > 0", r.stderr
    r = subprocess.run([sys.executable, "-m", "cai.cli", "train", "rloo", "--config", str(cfg), "ppo.clip=0.2",
                        f"model={make_tiny_model()}", "reward.fn=nowhere:fn", f"data.path={tmp_path / 'missing.jsonl'}"],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 2 and r.stderr.startswith("cai: error: ") and "missing.jsonl" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
