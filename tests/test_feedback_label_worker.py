"""The judge worker of `cai rlaif` (`judge_in_subprocess`, a spawned child that opens the judge engine): it
dies with its parent, even by kill -9, and holds the run's worker lock while it lives, so a rerun never
judges beside an orphan. `CAI_PAUSE_AT=judge-worker` holds the worker at a known point (tied to its parent,
lock taken, nothing judged yet) instead of racing a timer."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cai.data.store import RecordLog, RunDir

REPO = Path(__file__).resolve().parents[1]
PAIRS = [{"id": f"p{i}", "prompt": f"Question {i}?", "response_a": f"Yes {i}.", "response_b": f"No, never {i}."}
         for i in range(2)]

PARENT = """
import json, sys
from cai.data.store import RunDir
from cai.engine.config import EngineConfig
from cai.feedback.config import LabelConfig
from cai.feedback.label import judge_in_subprocess

if __name__ == "__main__":
    out, model, pairs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    run = RunDir(out, {"stage": "judge-worker-test"})
    done, prov, counters = judge_in_subprocess(EngineConfig(model=model, backend="hf", max_model_len=2048),
                                               "harmless", LabelConfig(few_shot=False, batch_pairs=1, seed=3),
                                               run, pairs)
    print(json.dumps({"labelled": sorted(done), "requests": counters["engine_requests"]}))
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a zombie has exited; only its parent's wait is missing


def _parent(tmp_path: Path, model: Path, env: dict) -> subprocess.Popen:
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    return subprocess.Popen([sys.executable, str(script), str(tmp_path / "out"), str(model), json.dumps(PAIRS)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **env})


def test_judge_worker_dies_with_its_parent_killed_by_sigkill(tmp_path, tiny_model):
    parent = _parent(tmp_path, tiny_model, {"CAI_PAUSE_AT": "judge-worker"})
    lock = tmp_path / "out" / ".cai" / "worker.lock"
    try:
        t0 = time.time()
        worker = 0
        while not worker:  # the worker writes its pid into the worker lock once it holds it
            assert parent.poll() is None and time.time() - t0 < 120, parent.stderr.read()[-2000:]
            text = lock.read_text().strip() if lock.is_file() else ""
            worker = int(text) if text.isdigit() else 0
            time.sleep(0.05)
        assert worker != parent.pid and _alive(worker)
        os.kill(parent.pid, signal.SIGKILL)
        assert parent.wait() == -signal.SIGKILL
        t0 = time.time()
        while _alive(worker) and time.time() - t0 < 10:
            time.sleep(0.05)
        assert not _alive(worker), "the judge worker outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
        if worker and _alive(worker):
            os.kill(worker, signal.SIGKILL)
    # the rerun opens the directory at once: no orphan holds the worker lock
    t0 = time.perf_counter()
    RunDir(tmp_path / "out", {"stage": "judge-worker-test"}).release()
    assert time.perf_counter() - t0 < 2
    assert RecordLog(tmp_path / "out" / ".cai" / "records" / "prefs").load() == {}  # it never judged


def test_judge_worker_labels_and_lets_go_of_the_lock(tmp_path, tiny_model):
    parent = _parent(tmp_path, tiny_model, {})
    stdout, stderr = parent.communicate(timeout=300)
    assert parent.returncode == 0, stderr[-3000:]
    got = json.loads(stdout.strip().splitlines()[-1])
    assert got["labelled"] == sorted(RecordLog(tmp_path / "out" / ".cai" / "records" / "prefs").load())
    assert len(got["labelled"]) == len(PAIRS) and got["requests"] > 0
    RunDir(tmp_path / "out", {"stage": "judge-worker-test"}).release()
