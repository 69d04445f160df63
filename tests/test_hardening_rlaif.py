"""`cai rlaif` with a judge that is not the policy, on vLLM (one engine per process): the policy samples,
its engine closes, and the judge runs in a child process appending to the same record log. Two different
tiny models; the manifest names each, and every pair is labelled by the judge."""
from __future__ import annotations

import json

from conftest import run_cai

from cai.data.layout import read_config
from cai.testing import make_tiny_model


def test_rlaif_with_a_different_judge_on_vllm(tmp_path, tiny_model):
    judge = make_tiny_model(tmp_path / "judge", seed=1)
    out = tmp_path / "out"
    args = ["rlaif", "--engine", "vllm", "--model", str(tiny_model), "--judge", str(judge), "--limit", "3",
            "--n", "2", "--max-tokens", "6", "--no-few-shot", "--max-model-len", "2048", "--engine-arg",
            "enforce_eager=true", "--engine-arg", f"kv_cache_memory_bytes={128 * 2**20}", "--out", str(out),
            "--cache", str(tmp_path / "c.sqlite")]
    r = run_cai(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((out / "manifest.json").read_text())
    assert m["provenance"]["policy"]["model_id"] == str(tiny_model)
    assert m["provenance"]["judge"]["model_id"] == str(judge)
    assert m["provenance"]["judge"]["model_hash"] != m["provenance"]["policy"]["model_hash"]
    prefs, pairs = read_config(out, "prefs"), read_config(out, "pairs")
    assert len(pairs) >= 1 and m["labelled"] + sum(m["skipped"].values()) == len(pairs) and m["errors"] == 0
    assert all(p["model_id"] == str(judge) and p["role"] == "judge" for p in prefs)
    assert m["engine_requests"] >= 2 * len(prefs)  # the child's judge counters reach the manifest
