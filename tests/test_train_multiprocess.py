"""Two real CPU processes (gloo) through `cai train STAGE --nproc 2 [--fsdp]`, against one process.

At the same global batch two processes give the same step-1 loss as one process (within 1e-5) and the
same step-2 loss (the gradients were combined correctly): with DDP (each process holds every parameter)
and with FSDP2 (each holds half of them, and the saved model is the gathered full one, equal to the
one-process model). Every run's card records what it ran as; each test asserts the process count and
accelerate's distributed type, so a launcher that silently starts one process fails here."""
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from cai.testing import make_prefs_dataset, make_sft_dataset, make_tiny_model
from cai.train import DPOConfig, RMConfig, SFTConfig, load_config
from cai.train.card import read_notes

STAGES = {"sft": SFTConfig, "rm": RMConfig, "dpo": DPOConfig}


def _losses(out):
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in recs if "loss" in r]


def run_cli(argv: list[str]) -> None:
    r = subprocess.run([sys.executable, "-m", "cai.cli", *argv], capture_output=True, text=True, check=False,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """`one_process(stage)`: the arguments and the one-process run of `stage` the tests compare with (run once)."""
    runs = {}

    def get(stage):
        if stage not in runs:
            runs[stage] = _one_process(stage, tmp_path_factory.mktemp(f"{stage}-one"))
        return runs[stage]
    return get


def _one_process(stage, tmp_path):
    import importlib
    tiny = make_tiny_model()
    data = make_sft_dataset(tmp_path / "d", 16) if stage == "sft" else make_prefs_dataset(tmp_path / "d", 16)
    args = [f"model={tiny}", f"data.path={data}", "data.eval_fraction=0", "run.max_steps=2", "run.batch_size=8",
            "run.micro_batch_size=2", "run.save_every=0", "run.progress=false", "optim.lr=1e-3",
            "optim.scheduler=constant"] + ([f"ref_cache_dir={tmp_path / 'ref'}"] if stage == "dpo" else [])
    # 1 process, global batch 8 as 4 micro-batches of 2
    one = tmp_path / "one"
    importlib.import_module(f"cai.train.{stage}").train(load_config(STAGES[stage], None, args + [f"run.output_dir={one}"]))
    return args, one


def _assert_same_training(one, two):
    l1, l2 = _losses(one), _losses(two)
    assert len(l1) == len(l2) == 2
    assert abs(l1[0] - l2[0]) <= 1e-5, (l1, l2)
    assert abs(l1[1] - l2[1]) <= 1e-4, (l1, l2)
    assert l1[1] != l1[0]
    assert (two / "model.safetensors").is_file() and (two / "README.md").is_file()


@pytest.mark.parametrize("stage", ["sft", "rm", "dpo"])
def test_two_processes_match_one(stage, one_process, tmp_path):
    args, one = one_process(stage)
    two = tmp_path / "two"
    # 2 processes, global batch 8 = 2 processes x 2 micro-batches of 2
    run_cli(["train", stage, "--nproc", "2", *args, f"run.output_dir={two}"])
    p1, p2 = read_notes(one)["processes"], read_notes(two)["processes"]
    assert (p1["processes"], p1["distributed_type"]) == (1, "NO")
    assert (p2["processes"], p2["distributed_type"], p2["backend"]) == (2, "MULTI_CPU", "gloo")
    assert p2["params_per_process"] == [p2["params"]] * 2 == [p1["params"]] * 2  # DDP: replicas
    _assert_same_training(one, two)


@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_fsdp_two_processes_hold_half_each_and_match_one(stage, one_process, tmp_path):
    args, one = one_process(stage)
    two = tmp_path / "two"
    run_cli(["train", stage, "--nproc", "2", "--fsdp", *args, f"run.output_dir={two}"])
    p = read_notes(two)["processes"]
    assert (p["processes"], p["distributed_type"], p["backend"]) == (2, "FSDP", "gloo")
    assert p["params"] == read_notes(one)["processes"]["params"]
    for held in p["params_per_process"]:  # dim-0 shards: half of every tensor, up to one row's padding
        assert abs(held - p["params"] / 2) <= 0.01 * p["params"], p
    _assert_same_training(one, two)
    # the saved model is the full one gathered from both shards, equal to what one process trained
    w1, w2 = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    assert w1.keys() == w2.keys()
    for k in w1:
        assert w1[k].shape == w2[k].shape, k
        assert torch.allclose(w1[k], w2[k], atol=1e-5, rtol=0), (k, (w1[k] - w2[k]).abs().max())


def test_nproc_runs_torchrun_with_gloo_on_cpu(tmp_path, monkeypatch):
    from cai.train.distributed import FSDP_ENV, launch_command
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cmd, env = launch_command(2, True, ["train", "sft", "--config", "c.yaml", "run.max_steps=2"], cuda=False)
    assert cmd[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "cai.cli",
                       "train", "sft", "--config", "c.yaml", "run.max_steps=2"]
    assert env["ACCELERATE_USE_CPU"] == "true" and env["ACCELERATE_USE_FSDP"] == "true"
    assert env["OMP_NUM_THREADS"] == str(max(1, (os.cpu_count() or 1) // 2))
    assert all(env[k] == v for k, v in FSDP_ENV.items())
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    _, gpu = launch_command(2, False, [], cuda=True)  # on GPUs accelerate picks NCCL itself; no FSDP asked
    assert "ACCELERATE_USE_CPU" not in gpu and "ACCELERATE_USE_FSDP" not in gpu


@pytest.mark.parametrize("flags, field", [(["--fsdp"], "--fsdp"), (["--nproc", "0"], "--nproc"),
                                         (["--nproc", "2", "--fsdp", "run.tokens_per_batch=512"], "run.tokens_per_batch")])
def test_bad_process_flags_are_one_line_errors(flags, field, tmp_path, capsys):
    from cai.cli import main
    tiny = make_tiny_model()
    capsys.readouterr()
    rc = main(["train", "sft", *flags, f"model={tiny}", f"data.path={tmp_path}",
               f"run.output_dir={tmp_path / 'out'}"])
    err = capsys.readouterr().err
    assert rc == 2 and field in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()
