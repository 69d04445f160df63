"""kill -9 durability of `cai critique`: SIGKILL a real subprocess at several points, rerun the same command,
and end with exactly the rows of an uninterrupted run (same seed): none lost, none duplicated."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from conftest import PY, REPO, run_cai

from cai.critique import CritiqueConfig, critique
from cai.data.layout import read_config
from cai.engine.base import SamplingParams

N, ROUNDS, TOKENS = 5, 2, 6


def records(out: Path) -> int:
    return sum(f.read_text().count("\n") for f in (out / ".cai" / "records" / "conversations").glob("shard-*.jsonl"))


def kill_after(args: list[str], out: Path, k: int, timeout: float = 300) -> int:
    """Start the command, SIGKILL it once `k` conversation records are on disk; return its exit status."""
    p = subprocess.Popen([PY, "-m", "cai.cli", *args], cwd=REPO, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    t0 = time.time()
    while p.poll() is None and time.time() - t0 < timeout:
        if (out / ".cai").is_dir() and records(out) >= k:
            os.kill(p.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    return p.wait()


def test_kill9_at_several_points_then_resume(hf_engine, tiny_model, tmp_path):
    # the uninterrupted reference, with its own cache (so the resumed run cannot just read its answers)
    sp = SamplingParams(temperature=0.8, max_tokens=TOKENS)
    hf_engine.batch_size, old = 2, hf_engine.batch_size
    try:
        critique(prompts=str(REPO / "data" / "red_team.jsonl"), limit=N, out=tmp_path / "ref", engine=hf_engine,
                 cache=tmp_path / "ref.sqlite", progress=False,
                 config=CritiqueConfig(rounds=ROUNDS, answer=sp, critique=sp, revision=sp, filters=(), seed=3))
    finally:
        hf_engine.batch_size = old

    out = tmp_path / "out"
    args = ["critique", "--model", str(tiny_model), "--engine", "hf", "--engine-arg", "batch_size=2",
            "--max-model-len", "2048", "--limit", str(N), "--rounds", str(ROUNDS), "--max-tokens", str(TOKENS),
            "--temperature", "0.8", "--filters", "none", "--seed", "3", "--out", str(out),
            "--cache", str(tmp_path / "cache.sqlite")]
    assert kill_after(args, out, 1) == -signal.SIGKILL  # after the first conversation is logged
    first = records(out)
    assert 1 <= first < N
    assert kill_after(args, out, first + 2) == -signal.SIGKILL  # mid-run again, after resuming
    assert first < records(out) < N + 1
    r = run_cai(*args, env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]

    for config in ("sft", "prefs", "trace"):
        got, want = read_config(out, config), read_config(tmp_path / "ref", config)
        drop = ("engine",)  # same everything else, incl. model hash, seed and sampling
        assert [{k: v for k, v in x.items() if k not in drop} for x in got] == \
               [{k: v for k, v in x.items() if k not in drop} for x in want]
    ids = [x["id"] for x in read_config(out, "sft")]
    assert ids == sorted(set(ids)) and len(ids) == N  # none lost, none duplicated
