"""PPO on two real CPU processes (gloo), against one process. Each process samples its share of the
prompts on its own engine, with seeds that follow the global batch position, so the first iteration's
rollouts (and hence its reward, length and entropy statistics, gathered over processes) equal a
one-process run's: with DDP through `cai train ppo --nproc 2`, and with FSDP2, where each process holds
half of the policy and value parameters, yet the weights each engine serves after a sync are the
trainer's full weights (equal to the saved model). Each test asserts the process count and accelerate's
distributed type it ran with."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cai.testing import make_tiny_model
from cai.train import PPOConfig, load_config
from cai.train.card import read_notes
from cai.train.distributed import launch_command

HELPER = Path(__file__).parent / "helpers" / "ppo_synced_weights.py"


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The arguments and the one-process run both tests compare with (run once)."""
    from cai.train.ppo import train
    tmp_path = tmp_path_factory.mktemp("ppo-one")
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"prompt": f"Name a {w}."}) + "\n"
                                              for w in ("colour", "fruit", "city", "river")))
    (tmp_path / "rw.py").write_text("def reward(p, r):\n    return [x.count('a') / (1 + len(x)) for x in r]\n")
    args = [f"model={make_tiny_model()}", f"data.path={tmp_path / 'p.jsonl'}", f"reward.fn={tmp_path / 'rw.py'}:reward",
            "rollout.engine=hf", "rollout.max_new_tokens=5", "ppo.epochs=1", "ppo.num_minibatches=1",
            "run.batch_size=4", "run.micro_batch_size=2", "run.max_steps=2", "run.save_every=0",
            "run.progress=false", "optim.lr=1e-3"]
    one = train(load_config(PPOConfig, None, args + [f"run.output_dir={tmp_path / 'one'}"]))
    return args, Path(one)


def _run(cmd, env=None):
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]


def _assert_same_first_iteration(one, two):
    m1, m2 = ([json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()] for d in (one, two))
    assert len(m1) == len(m2) == 2
    for k in ("reward/raw", "length/mean", "entropy", "tokens"):
        assert abs(m1[0][k] - m2[0][k]) <= 1e-5, (k, m1[0][k], m2[0][k])
    assert m1[0]["reward/raw"] > 0 and m2[1]["kl"] != 0.0  # a real reward, and the second policy moved
    assert (two / "model.safetensors").is_file()


def test_two_processes_sample_what_one_does(one_process, tmp_path):
    args, one = one_process
    two = tmp_path / "two"
    _run([sys.executable, "-m", "cai.cli", "train", "ppo", "--nproc", "2", *args, f"run.output_dir={two}"])
    p = read_notes(two)["processes"]
    assert (p["processes"], p["distributed_type"], p["backend"]) == (2, "MULTI_CPU", "gloo")
    assert read_notes(one)["processes"]["processes"] == 1
    _assert_same_first_iteration(one, two)


def test_fsdp_engines_serve_the_full_trained_weights(one_process, tmp_path):
    args, one = one_process
    two = tmp_path / "two"
    cmd, env = launch_command(2, True, [], cuda=False)
    cmd = cmd[:cmd.index("-m", 3)] + [str(HELPER), *args, f"run.output_dir={two}"]  # torchrun ... HELPER args
    _run(cmd, env)
    p = read_notes(two)["processes"]
    assert (p["processes"], p["distributed_type"], p["backend"]) == (2, "FSDP", "gloo")
    for held in p["params_per_process"]:  # policy and value model, each sharded over the 2 processes
        assert abs(held - p["params"] / 2) <= 0.01 * p["params"], p
    _assert_same_first_iteration(one, two)
    for rank in (0, 1):  # each process's engine, after the last sync: the full trained policy
        s = json.loads((two / f"synced-{rank}.json").read_text())
        assert s["missing"] == [] and s["shapes_equal"] and s["tensors"] > 0, s
        assert s["max_abs_diff"] == 0.0, s
    w0 = load_file(make_tiny_model() / "model.safetensors")
    w1, w2 = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    assert w1.keys() == w2.keys()
    # the saved policy is the gathered one, trained as one process trained it: two Adam steps of lr 1e-3
    # moved weights by up to 2e-3, and reduction order changes an update by a few 1e-5 at most
    assert max((w1[k] - w0[k]).abs().max().item() for k in w1) > 1e-3
    for k in w1:
        assert w1[k].shape == w2[k].shape, k
        assert torch.allclose(w1[k], w2[k], atol=1e-4, rtol=0), (k, (w1[k] - w2[k]).abs().max())
