"""`cai critique` end to end on real SmolLM2-135M with vLLM (a subprocess: the test session's in-process vLLM
engine holds the tiny model): 4 prompts, 1 round, 48 tokens a step; then the yield of the default
configuration on 20 shipped prompts (issue 11 aims at >= 85% kept; measured 65%)."""
from __future__ import annotations

import json

import pytest
from conftest import run_cai

from cai.data.layout import read_config, read_manifest


@pytest.mark.integration
def test_smollm2_vllm_critique_end_to_end(smollm2_dir, tmp_path):
    out, cache = tmp_path / "out", str(tmp_path / "cache.sqlite")
    args = ["critique", "--model", "smollm2-135m", "--engine", "vllm", "--limit", "4", "--rounds", "1",
            "--max-tokens", "48", "--retries", "0", "--filters", "empty,scaffold,unchanged", "--out", str(out), "--cache", cache]
    r = run_cai(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    m = read_manifest(out)
    assert m["conversations"] == 4 and m["errors"] == 0 and m["engine_requests"] == 4 * 3
    assert m["kept"] + sum(m["filtered"].values()) == 4 and m["provenance"]["model_id"] == "smollm2-135m"
    trace = read_config(out, "trace")
    assert all(t["critique"].strip() and t["revision"] is not None for t in trace)  # a real model writes text
    assert len(read_config(out, "prefs")) == m["kept"]
    # the same command, dry: nothing left to do
    d = run_cai(*args, "--dry-run")
    assert d.returncode == 0 and json.loads(d.stdout.splitlines()[-1])["regenerate"] == 0


@pytest.mark.integration
def test_smollm2_default_config_yield_on_20_prompts(smollm2_dir, tmp_path):
    out = tmp_path / "out"
    r = run_cai("critique", "--model", "smollm2-135m", "--engine", "vllm", "--prompts", "data/red_team.jsonl",
                "--limit", "20", "--out", str(out), "--cache", str(tmp_path / "cache.sqlite"),
                timeout=1500)  # about 3 min on a quiet 2-core machine; the limit only catches a hang
    assert r.returncode == 0, r.stderr[-3000:]
    m = read_manifest(out)
    assert m["conversations"] == 20 and m["errors"] == 0
    # Issue 11's goal: at least 17 of 20 (85%) kept. Measured 20 with this configuration on a quiet machine
    # (bf16, the first 2 few-shot conversations; 17 with all 3 in fp32 and in bf16)
    # (47% before the budgets, retries and last-good-revision fallback; 65% before early stops, the copy
    # filter, answer and critique budgets of 96/64, rounds that do not build on a dropped revision and 5
    # retries instead of 2). Kept means past every filter: not empty, cut, scaffold, a copy or unchanged.
    assert m["kept"] >= 17, (m["kept"], m["filtered"])
    assert set(m["filtered"]) == {"empty", "truncated", "scaffold", "copy", "unchanged"}
    # early stops: a revision stopped on a scaffold marker keeps it in its text, and is never the kept answer
    from cai.critique.config import SCAFFOLD_STOPS
    trace = read_config(out, "trace")
    assert not any(t["final"] and t["revision"].endswith(SCAFFOLD_STOPS) for t in trace)
    assert m["kept"] + sum(m["filtered"].values()) + m["too_long"] == 20
    sft = read_config(out, "sft")
    assert all(row["revision_response"].strip() for row in sft)
    # a text-only job: bf16 where the CPU computes it natively, else fp32
    from cai.engine.vllm_engine import cpu_dtype
    assert 0 <= m["wasted_tokens"] < m["tokens"] and m["provenance"]["dtype"] == cpu_dtype(text_only=True)
    # what a user sees: cai's own summary and next step, no vLLM INFO lines
    assert f"kept {m['kept']} of 20 conversations in {out}" in r.stderr
    assert f"next: cai train sft --config configs/sft.yaml data.path={out}" in r.stderr
    assert " INFO " not in r.stderr and "Attempted to load weight" not in r.stderr
