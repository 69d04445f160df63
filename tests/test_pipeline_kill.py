"""kill -9 of `cai run` at two points (inside the critique stage, then inside SFT after a checkpoint),
then a rerun: the pipeline finishes with nothing lost and nothing duplicated, and no stage process
outlives the killed pipeline (each stage runs in a child process that dies with its parent)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from tests.conftest import PY, REPO


def _wait_for(cond, proc: subprocess.Popen, what: str, timeout: float = 600) -> None:
    t0 = time.time()
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"cai run exited ({proc.returncode}) before {what}")
        if time.time() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _children_of(tag: str) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "cai.pipeline.child" in cmd and tag in cmd:
                out.append(int(d.name))
    return out


def test_kill_9_twice_then_rerun_finishes_with_nothing_lost_or_duplicated(tmp_path, tiny_model):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"Question number {i}?"}) + "\n" for i in range(3)))
    run_dir = tmp_path / "run"
    (tmp_path / "pipe.yaml").write_text(f"""name: killme
run_dir: {run_dir}
stages:
  critique:
    kind: critique
    model: {tiny_model}
    engine: {{backend: hf, max_model_len: 1024, cache: {tmp_path / 'requests.sqlite'}}}
    constitution: harmless
    prompts: {prompts}
    rounds: 1
    few_shot: false
    filters: []
    answer: {{max_tokens: 4}}
    critique: {{max_tokens: 4}}
    revision: {{max_tokens: 4}}
  sft:
    kind: train.sft
    model: {tiny_model}
    data: {{path: "${{stages.critique}}", eval_fraction: 0}}
    run: {{max_steps: 4, batch_size: 2, micro_batch_size: 2, save_every: 1, progress: false}}
""")
    env = {**os.environ, "CAI_CACHE": str(tmp_path / "cache"), "CAI_TRAIN_STEP_DELAY": "1.5"}

    def start(i: int) -> subprocess.Popen:
        return subprocess.Popen([PY, "-m", "cai.cli", "run", str(tmp_path / "pipe.yaml")], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=open(tmp_path / f"stderr-{i}.txt", "w"))

    def records() -> list[str]:
        return [ln for f in run_dir.glob("stages/critique-*/.cai/records/conversations/shard-*.jsonl")
                for ln in f.read_text().splitlines(keepends=True)]

    def kill(proc: subprocess.Popen) -> None:
        os.kill(proc.pid, signal.SIGKILL)  # the pipeline process only: its stage child must die with it
        proc.wait()
        t0 = time.time()
        while _children_of(str(tmp_path)) and time.time() - t0 < 30:
            time.sleep(0.2)
        assert _children_of(str(tmp_path)) == []

    # 1. kill -9 inside the critique stage, once it has logged a finished conversation
    proc = start(1)
    _wait_for(lambda: len(records()) >= 1, proc, "a finished conversation")
    kill(proc)
    finished_first = bool(list(run_dir.glob("stages/critique-*.done.json")))  # the kill may land after its marker

    # 2. rerun; kill -9 inside SFT, once a checkpoint exists
    proc = start(2)
    _wait_for(lambda: any(run_dir.glob("stages/sft-*/checkpoints/step-*/state.json")), proc, "an SFT checkpoint")
    kill(proc)
    err2 = (tmp_path / "stderr-2.txt").read_text()
    if finished_first:
        assert "[1/2] critique (critique): cached -> " in err2
    else:
        assert "[1/2] critique (critique): starting (interrupted earlier: resumes in its output directory)" in err2
        assert "[1/2] critique (critique): done in" in err2

    # 3. rerun to the end
    proc = start(3)
    assert proc.wait(timeout=900) == 0, (tmp_path / "stderr-3.txt").read_text()[-3000:]
    err3 = (tmp_path / "stderr-3.txt").read_text()
    assert "[1/2] critique (critique): cached -> " in err3
    assert "[2/2] sft (train.sft): starting (interrupted earlier: resumes in its output directory)" in err3

    # nothing duplicated: one output dir and one marker per stage, each conversation logged once,
    # each training step logged once; nothing lost: every prompt kept, every step and the model there
    stages = run_dir / "stages"
    assert sorted(p.name.split("-")[0] + p.name[-10:] * p.name.endswith(".done.json")
                  for p in stages.iterdir()) == ["critique", "critique.done.json", "sft", "sft.done.json"]
    assert sorted(json.loads(ln)["key"] for ln in records()) == ["p0", "p1", "p2"]
    crit = next(stages.glob("critique-*[!n]"))
    assert json.loads((crit / "manifest.json").read_text())["kept"] == 3
    sft = next(stages.glob("sft-*[!n]"))
    steps = [json.loads(ln)["step"] for ln in (sft / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert (sft / "model.safetensors").is_file()
    assert (run_dir / "report.html").is_file()
