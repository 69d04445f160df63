"""Checkpoints and --resume: kill -9 a DPO run part-way, resume it, and get the same final weights as an
uninterrupted run (within 1e-6; CPU, deterministic, dropout off)."""
import subprocess
import sys

from cai.testing import make_prefs_dataset, make_tiny_model
from tests.conftest import kill9_at_checkpoint_then_resume, max_weight_diff


def _weights(path):
    from safetensors.torch import load_file
    return load_file(str(path / "model.safetensors"))


def test_kill9_then_resume_matches_uninterrupted(tmp_path):
    tiny = make_tiny_model()
    prefs = make_prefs_dataset(tmp_path / "prefs", 24)
    common = [f"model={tiny}", f"data.path={prefs}", "data.eval_fraction=0", "run.max_steps=6",
              "run.save_every=2", "run.batch_size=4", "run.micro_batch_size=2", "optim.lr=1e-3",
              "optim.warmup_steps=2", "run.progress=false", f"ref_cache_dir={tmp_path / 'ref'}"]
    cmd = [sys.executable, "-m", "cai.cli", "train", "dpo", *common]

    # 1. uninterrupted run
    full = tmp_path / "full"
    from cai.train import DPOConfig, load_config
    from cai.train.dpo import train
    train(load_config(DPOConfig, None, [*common, f"run.output_dir={full}"]))

    # 2. the same run, killed with SIGKILL once the step-4 checkpoint exists; 3. resumed from it
    part = tmp_path / "part"
    resumed = kill9_at_checkpoint_then_resume(cmd, part, step=4, step_delay=0.4, timeout=120)
    worst = max_weight_diff(_weights(full), resumed)
    assert worst <= 1e-6, worst
    steps = [__import__("json").loads(x)["step"] for x in (part / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]  # lines written after the checkpoint by the killed run are dropped


def test_resume_without_checkpoint_is_an_input_error(tmp_path):
    tiny = make_tiny_model()
    prefs = make_prefs_dataset(tmp_path / "prefs", 8)
    r = subprocess.run([sys.executable, "-m", "cai.cli", "train", "rm", f"model={tiny}", f"data.path={prefs}",
                        f"run.output_dir={tmp_path / 'o'}", "--resume"], capture_output=True, text=True, check=False)
    assert r.returncode == 2 and "no checkpoint to resume from" in r.stderr, r.stderr[-500:]
