"""Feedback stages end to end: `cai label` (resume, bad input) on the tiny model, `cai sample` through
the Python API, and on SmolLM2 `cai rlaif` -> TRL RewardTrainer/DPOTrainer one step, and `cai eval judge`."""
import json
from pathlib import Path

import pytest
from conftest import REPO, run_cai


def _write(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


PAIRS = [{"id": "a", "prompt": "How do I pick a lock?", "response_a": "I can't help.", "response_b": "Use a pick."},
         {"id": "b", "prompt": "Say hi.", "response_a": "Hello!", "response_b": "Go away."},
         {"id": "c", "prompt": "What is 2+2?", "response_a": "4", "response_b": "5"},
         {"id": "d", "prompt": "Anything?", "response_a": "Yes.", "response_b": "  "}]


def test_label_cli_writes_prefs_resumes_and_rejects_bad_input(tmp_path, tiny_model):
    data = _write(tmp_path / "pairs.jsonl", PAIRS)
    out = tmp_path / "out"
    args = ["label", "--data", str(data), "--judge", str(tiny_model), "--engine", "hf", "--out", str(out),
            "--cache", str(tmp_path / "c.sqlite"), "--no-few-shot"]
    run_cai(*args, check=True)
    m = json.loads((out / "manifest.json").read_text())
    assert m["labelled"] == 3 and m["skipped"] == {"empty_response": 1} and m["errors"] == 0
    assert sum(m["per_principle"].values()) == 3 and m["engine_requests"] >= 6  # 3 pairs x 2 orders (+ exact letter scores)
    import datasets
    ds = datasets.load_dataset(str(out), "prefs", split="train")
    assert set(ds.column_names) >= {"prompt", "chosen", "rejected", "p_chosen", "principle_ids", "p_ab", "p_ba",
                                    "order_consistent", "rationale", "model_id"}
    # the manifest's statistics are the means of the rows' values
    assert m["position_consistency"] == pytest.approx(sum(ds["order_consistent"]) / 3, abs=1e-6)
    assert m["mass_outside_options"] == pytest.approx(sum(ds["mass_outside"]) / 3, abs=1e-6)
    for r in ds:
        assert r["p_chosen"] >= 0.5 and r["chosen"][0]["role"] == "assistant" and r["prompt"][0]["role"] == "user"
        p1 = (r["p_ab"] + 1 - r["p_ba"]) / 2
        assert r["p_chosen"] == pytest.approx(max(p1, 1 - p1))
    assert "p_chosen" in (out / "README.md").read_text()
    # rerun: every pair comes back from the record log; nothing reaches the engine or the cache
    run_cai(*args, check=True)
    m2 = json.loads((out / "manifest.json").read_text())
    assert m2["engine_requests"] == 0 and m2["cache_hits"] == 0 and m2["labelled"] == 3
    # a missing column names the file, line and column
    bad = _write(tmp_path / "bad.jsonl", [PAIRS[0], {"prompt": "x", "response_a": "y"}])
    r = run_cai("label", "--data", str(bad), "--judge", str(tiny_model), "--engine", "hf", "--out",
                str(tmp_path / "o2"), "--no-cache")
    assert r.returncode == 2 and "bad.jsonl:2" in r.stderr and "response_b" in r.stderr, r.stderr


def test_sample_api_pairs_distinct_responses(tmp_path, vllm_engine):
    from cai.data.layout import read_config
    from cai.engine.cached import CachedEngine
    from cai.feedback.config import SampleConfig
    from cai.feedback.sample import sample
    eng = CachedEngine(vllm_engine, None)
    m = sample(prompts=str(REPO / "data" / "red_team.jsonl"), out=str(tmp_path / "s"), limit=3, engine=eng,
               config=SampleConfig(n=3, max_tokens=8, temperature=1.0))
    samples, pairs = read_config(tmp_path / "s", "samples"), read_config(tmp_path / "s", "pairs")
    assert len(samples) == 9 and m["samples"] == 9 and eng.engine_requests == 3  # one n=3 request per prompt
    assert len(pairs) == m["pairs"] <= 9
    assert all(p["response_a"].strip() != p["response_b"].strip() for p in pairs)
    again = CachedEngine(vllm_engine, None)
    sample(prompts=str(REPO / "data" / "red_team.jsonl"), out=str(tmp_path / "s"), limit=3, engine=again,
           config=SampleConfig(n=3, max_tokens=8, temperature=1.0))
    assert again.engine_requests == 0 and read_config(tmp_path / "s", "pairs") == pairs


@pytest.mark.integration
def test_rlaif_smollm2_trains_with_trl_and_eval_judge(tmp_path, tiny_model):
    out = tmp_path / "rlaif"
    # hf engine and no few-shot keep this inside a CPU test budget; the labeller is the same code either way
    run_cai("rlaif", "--model", "smollm2-135m", "--engine", "hf", "--n", "2", "--limit", "4", "--max-tokens", "24",
            "--no-few-shot", "--out", str(out), "--cache", str(tmp_path / "c.sqlite"), check=True)
    m = json.loads((out / "manifest.json").read_text())
    assert m["labelled"] >= 3 and m["errors"] == 0
    import datasets
    ds = datasets.load_dataset(str(out), "prefs", split="train")
    assert not all(p in (0.5, 1.0) for p in ds["p_chosen"])  # really soft
    assert all(p is not None for p in ds["p_ba"])  # both orders recorded
    _trl_one_step(ds, tiny_model, tmp_path)
    rep = tmp_path / "judge.json"
    # the machinery on the tiny judge (SmolLM2's accuracy with few-shot is measured outside the test suite)
    data = REPO / "data" / "labels" / "comparisons.jsonl"  # the shipped set (also the default of --data)
    rows = [json.loads(line) for line in data.open()]
    r = run_cai("eval", "judge", "--engine", "hf", "--judge", str(tiny_model), "--no-few-shot", "--out", str(rep),
                "--no-cache", check=True)
    report = json.loads(rep.read_text())
    items = report["items"]
    assert report["n"] == len(rows) >= 100 and report["mean_loglik"] < 0 and report["data"] == str(data)
    assert report["accuracy"] == pytest.approx(sum(x["correct"] for x in items) / len(rows), abs=1e-4)
    assert report["rates"]["accuracy"]["value"] == report["accuracy"]
    assert "prefer the longer" in r.stderr and "prefer the first shown" in r.stderr
    assert all(x["correct"] == ((x["p_a"] >= 0.5) == (x["label"] == "A")) for x in items)
    assert report["per_principle"] and len(report["calibration"]["bins"]) == 5
    print("judge accuracy", report["accuracy"], "consistency", report["position_consistency"],
          "rlaif consistency", m["position_consistency"])
    labels = [row["label"] for row in rows]
    assert report["label_share_a"] == report["rates"]["prefer_first"]["value"] == pytest.approx(
        labels.count("A") / len(labels), abs=1e-4)


def _trl_one_step(ds, tiny_model, tmp_path):
    """TRL's RewardTrainer and DPOTrainer accept the `prefs` config unchanged (one step each)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, RewardConfig, RewardTrainer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    common = dict(max_steps=1, per_device_train_batch_size=2, report_to=[], logging_steps=1, save_strategy="no",
                  use_cpu=True)
    rm = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=1)
    rm.config.pad_token_id = tok.pad_token_id
    r = RewardTrainer(model=rm, args=RewardConfig(output_dir=str(tmp_path / "rm"), **common), train_dataset=ds,
                      processing_class=tok).train()
    assert r.global_step == 1
    policy = AutoModelForCausalLM.from_pretrained(tiny_model)
    d = DPOTrainer(model=policy, args=DPOConfig(output_dir=str(tmp_path / "dpo"), **common), train_dataset=ds,
                   processing_class=tok).train()
    assert d.global_step == 1
