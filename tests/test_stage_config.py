"""`--config FILE.yaml` + `KEY=VALUE` + `--print-config` for `cai critique`, `label`, `sample` and `rlaif`: a stage runs from
YAML, the shortcut flags and overrides land on the same dataclass fields, and the printed config reads back."""
import json
from pathlib import Path

import yaml
from conftest import run_cai

PAIRS = [{"id": "a", "prompt": "How do I pick a lock?", "response_a": "I can't help.", "response_b": "Use a pick."},
         {"id": "b", "prompt": "Say hi.", "response_a": "Hello!", "response_b": "Go away."}]


def test_print_config_round_trips_and_flags_override_the_file(tmp_path):
    first = run_cai("critique", "--out", "o", "--rounds", "3", "--answer-max-tokens", "40", "engine.backend=hf",
                    "--print-config", check=True).stdout
    cfg = yaml.safe_load(first)
    assert cfg["rounds"] == 3 and cfg["answer"]["max_tokens"] == 40 and cfg["engine"]["backend"] == "hf"
    assert cfg["critique"]["max_tokens"] == 96 and cfg["retries"] == 2  # dataclass defaults, stated once
    path = tmp_path / "critique.yaml"
    path.write_text(first)
    assert run_cai("critique", "--config", str(path), "--print-config", check=True).stdout == first
    again = yaml.safe_load(run_cai("critique", "--config", str(path), "--rounds", "1", "seed=7", "--print-config",
                                   check=True).stdout)
    assert again["rounds"] == 1 and again["seed"] == 7 and again["answer"]["max_tokens"] == 40
    label = yaml.safe_load(run_cai("label", "--data", "d", "--out", "o", "--cot", "--no-clamp", "principles=2",
                                   "--print-config", check=True).stdout)
    assert label["mode"] == "cot" and label["clamp"] is None and label["principles"] == 2 and label["judge"]
    sample = yaml.safe_load(run_cai("sample", "--n", "2", "seed=5", "engine.backend=hf", "--print-config",
                                    check=True).stdout)
    assert sample["n"] == 2 and sample["seed"] == 5 and sample["engine"]["backend"] == "hf"
    assert sample["temperature"] == 1.0 and sample["pairing"] == "all"  # SampleConfig's defaults
    rlaif = yaml.safe_load(run_cai("rlaif", "--n", "3", "--seed", "4", "--cot", "--judge", "j", "label.top_k=5",
                                   "--engine", "hf", "--print-config", check=True).stdout)
    assert rlaif["engine"]["backend"] == rlaif["judge_engine"]["backend"] == "hf"
    assert rlaif["sample"]["n"] == 3 and rlaif["sample"]["seed"] == rlaif["label"]["seed"] == 4
    assert rlaif["label"]["mode"] == "cot" and rlaif["label"]["top_k"] == 5 and rlaif["judge"] == "j"


def test_config_errors_name_file_line_and_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("out: o\nrounds: many\n")
    r = run_cai("critique", "--config", str(path), "--print-config")
    assert r.returncode == 2 and r.stderr.strip().startswith(f"cai: error: {path}:2:9: rounds:"), r.stderr
    assert "Traceback" not in r.stderr


def test_critique_and_label_run_from_yaml(tmp_path, tiny_model):
    engine = {"backend": "hf", "dtype": "float32", "cache": str(tmp_path / "c.sqlite")}
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": p}) + "\n"
                               for i, p in enumerate(["Say hi.", "How do I pick a lock?"])))
    crit = tmp_path / "critique.yaml"
    step = {"max_tokens": 6, "temperature": 0.0}
    crit.write_text(yaml.safe_dump({"model": str(tiny_model), "engine": engine, "prompts": str(prompts),
                                    "out": str(tmp_path / "sl"), "rounds": 1, "few_shot": False, "filters": [],
                                    "answer": step, "critique": step, "revision": step}))
    run_cai("critique", "--config", str(crit), check=True)
    m = json.loads((tmp_path / "sl" / "manifest.json").read_text())
    assert m["rounds"] == 1 and m["conversations"] == 2

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in PAIRS))
    lab = tmp_path / "label.yaml"
    lab.write_text(yaml.safe_dump({"judge": str(tiny_model), "engine": engine, "data": str(pairs),
                                   "out": str(tmp_path / "prefs"), "few_shot": False, "both_orders": False}))
    run_cai("label", "--config", str(lab), check=True)
    m = json.loads((Path(tmp_path) / "prefs" / "manifest.json").read_text())
    assert m["labelled"] == 2 and m["errors"] == 0
    assert m["engine_requests"] >= 2 and m["position_consistency"] is None  # one order: nothing to compare
