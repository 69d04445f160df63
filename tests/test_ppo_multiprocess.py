"""`accelerate launch --num_processes 2 --cpu` runs PPO: each process samples its share of the prompts on its
own engine, with seeds that follow the global batch position, so the first iteration's rollouts (and hence
its reward, length and entropy statistics, gathered over processes) equal a one-process run's."""
import json
import os
import subprocess
import sys

from cai.testing import make_tiny_model
from cai.train import PPOConfig, load_config


def test_two_processes_sample_what_one_does(tmp_path):
    from cai.train.ppo import train
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"prompt": f"Name a {w}."}) + "\n"
                                              for w in ("colour", "fruit", "city", "river")))
    (tmp_path / "rw.py").write_text("def reward(p, r):\n    return [x.count('a') / (1 + len(x)) for x in r]\n")
    args = [f"model={make_tiny_model()}", f"data.path={tmp_path / 'p.jsonl'}", f"reward.fn={tmp_path / 'rw.py'}:reward",
            "rollout.engine=hf", "rollout.max_new_tokens=5", "ppo.epochs=1", "ppo.num_minibatches=1",
            "run.batch_size=4", "run.micro_batch_size=2", "run.max_steps=2", "run.save_every=0",
            "run.progress=false", "optim.lr=1e-3"]
    one = train(load_config(PPOConfig, None, args + [f"run.output_dir={tmp_path / 'one'}"]))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--cpu",
                        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                        "-m", "cai.cli", "train", "ppo", *args, f"run.output_dir={tmp_path / 'two'}"],
                       capture_output=True, text=True, env=env, check=False, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    m1, m2 = ([json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()] for d in (one, tmp_path / "two"))
    assert len(m1) == len(m2) == 2
    for k in ("reward/raw", "length/mean", "entropy", "tokens"):
        assert abs(m1[0][k] - m2[0][k]) <= 1e-5, (k, m1[0][k], m2[0][k])
    assert m1[0]["reward/raw"] > 0 and m2[1]["kl"] != 0.0  # a real reward, and the second policy moved
    assert (tmp_path / "two" / "model.safetensors").is_file()
