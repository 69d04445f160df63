"""kill -9 durability of `cai generate`, `cai sample` and `cai label`, like tests/test_critique_durability.py:
SIGKILL a real subprocess once some records are on disk, rerun the same command, and end with exactly the
rows of an uninterrupted run with the same seed: none lost, none duplicated. `CAI_RECORD_DELAY` slows each
record so the kill lands mid-run on a fast tiny model."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import PY, REPO, run_cai

from cai.data.layout import read_config
from cai.data.store import RequestCache
from cai.engine.base import SamplingParams
from cai.engine.cached import CachedEngine

N = 5
LOGS = {"generate": ("responses", ["responses"]), "sample": ("samples", ["samples", "pairs"]),
        "label": ("prefs", ["prefs"])}


def records(out: Path, log: str) -> int:
    return sum(f.read_text().count("\n") for f in (out / ".cai" / "records" / log).glob("shard-*.jsonl"))


def kill_after(args: list[str], out: Path, log: str, k: int, timeout: float = 300) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CAI_RECORD_DELAY": "0.4"}
    p = subprocess.Popen([PY, "-m", "cai.cli", *args], cwd=REPO, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env=env)
    t0 = time.time()
    while p.poll() is None and time.time() - t0 < timeout:
        if (out / ".cai").is_dir() and records(out, log) >= k:
            os.kill(p.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    return p.wait()


def reference(stage: str, hf_engine, tmp_path: Path, inputs: Path) -> Path:
    """The uninterrupted run, in-process, with its own cache (the resumed run cannot read its answers)."""
    from cai.feedback.config import LabelConfig, SampleConfig
    from cai.feedback.label import label
    from cai.feedback.sample import sample
    from cai.generate import generate
    out = tmp_path / "ref"
    eng = CachedEngine(hf_engine, RequestCache(tmp_path / "ref.sqlite"))
    hf_engine.batch_size, old = 2, hf_engine.batch_size
    try:
        if stage == "generate":
            generate(prompts=str(inputs), out=str(out), engine=eng, seed=3,
                     params=SamplingParams(temperature=0.8, max_tokens=6, n=2))
        elif stage == "sample":
            sample(prompts=str(inputs), out=str(out), engine=eng,
                   config=SampleConfig(n=3, temperature=1.0, max_tokens=6, seed=3))
        else:
            label(data=str(inputs), out=str(out), constitution="harmless", engine=eng,
                  config=LabelConfig(few_shot=False, batch_pairs=1, seed=3))
    finally:
        hf_engine.batch_size = old
    return out


@pytest.mark.parametrize("stage", ["generate", "sample", "label"])
def test_kill9_then_resume_gives_the_uninterrupted_rows(stage, hf_engine, tiny_model, tmp_path):
    if stage == "label":
        inputs = tmp_path / "pairs.jsonl"
        inputs.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"Question {i}?", "response_a": f"Yes {i}.",
                                              "response_b": f"No, never {i}."}) + "\n" for i in range(N)))
        flags = ["--data", str(inputs), "--judge", str(tiny_model), "--no-few-shot", "--batch-pairs", "1"]
    else:
        inputs = tmp_path / "prompts.jsonl"
        inputs.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"Tell me about {i}."}) + "\n"
                                  for i in range(N)))
        flags = ["--prompts", str(inputs), "--model", str(tiny_model), "--max-tokens", "6"]
        flags += ["--n", "2", "--temperature", "0.8"] if stage == "generate" else ["--n", "3", "--temperature", "1.0"]
    want = reference(stage, hf_engine, tmp_path, inputs)
    out = tmp_path / "out"
    log, configs = LOGS[stage]
    args = [stage, *flags, "--engine", "hf", "--engine-arg", "batch_size=2", "--max-model-len", "2048",
            "--seed", "3", "--out", str(out), "--cache", str(tmp_path / "cache.sqlite")]
    assert kill_after(args, out, log, 1) == -signal.SIGKILL
    first = records(out, log)
    assert 1 <= first < N and not (out / "manifest.json").exists()  # killed mid-run, before any table
    r = run_cai(*args, env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert records(out, log) == N  # the rerun did only what was left: no record written twice
    for config in configs:
        got, ref = read_config(out, config), read_config(want, config)
        assert got == ref and len(got) >= N
