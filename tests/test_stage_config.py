"""`--config FILE.yaml` + `KEY=VALUE` + `--print-config` for `cai generate`, `critique`, `label`, `sample`, `rlaif` and
`eval judge`: a stage runs from YAML, the flags and overrides land on the same dataclass fields, a flag left out
leaves the dataclass default (or the file's value) standing, and the printed config reads back."""
import json
from pathlib import Path

import yaml
from conftest import run_cai

from cai.critique.config import CritiqueConfig

PAIRS = [{"id": "a", "prompt": "How do I pick a lock?", "response_a": "I can't help.", "response_b": "Use a pick."},
         {"id": "b", "prompt": "Say hi.", "response_a": "Hello!", "response_b": "Go away."}]


def test_print_config_round_trips_and_flags_override_the_file(tmp_path):
    first = run_cai("critique", "--out", "o", "--rounds", "3", "--answer-max-tokens", "40", "engine.backend=hf",
                    "--print-config", check=True).stdout
    cfg = yaml.safe_load(first)
    assert cfg["rounds"] == 3 and cfg["answer"]["max_tokens"] == 40 and cfg["engine"]["backend"] == "hf"
    # dataclass defaults, stated once
    assert cfg["critique"]["max_tokens"] == CritiqueConfig().critique.max_tokens == 64
    assert cfg["retries"] == CritiqueConfig().retries == 5
    assert cfg["few_shot"] == CritiqueConfig().few_shot == 2 and cfg["send_ahead"] is True
    shots = [yaml.safe_load(run_cai("critique", "--out", "o", *a, "--print-config", check=True).stdout)["few_shot"]
             for a in (["--few-shot", "1"], ["--no-few-shot"], ["few_shot=true"])]
    assert shots == [1, False, True]
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
    path.write_text("out: o\nfew_shot: -1\n")
    r = run_cai("critique", "--config", str(path), "--print-config")
    assert r.returncode == 2 and "few_shot: must be >= 0, or true/false" in r.stderr and "Traceback" not in r.stderr


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


def _round_trip(tmp_path, *argv: str) -> dict:
    """`--print-config` output read back by `--config` prints the same YAML; returns it parsed."""
    first = run_cai(*argv, "--print-config", check=True).stdout
    path = tmp_path / "round.yaml"
    path.write_text(first)
    assert run_cai(*argv[:2] if argv[0] == "eval" else argv[:1], "--config", str(path), "--print-config",
                   check=True).stdout == first
    return yaml.safe_load(first)


def test_generate_print_config_round_trips_and_flags_land_on_their_fields(tmp_path):
    cfg = _round_trip(tmp_path, "generate", "--out", "o", "--n", "3", "--max-tokens", "40", "--limit", "5",
                      "--max-model-len", "1024", "--engine-arg", "kv_cache_memory_bytes=536870912", "seed=4")
    assert cfg["out"] == "o" and cfg["limit"] == 5 and cfg["seed"] == 4
    assert cfg["sampling"]["n"] == 3 and cfg["sampling"]["max_tokens"] == 40
    assert cfg["engine"]["max_model_len"] == 1024 and cfg["engine"]["args"] == {"kv_cache_memory_bytes": 536870912}
    # flags left out: GenerateStage's and EngineSpec's own defaults, stated once
    assert cfg["sampling"]["temperature"] == 0.7 and cfg["sampling"]["top_p"] == 1.0 and cfg["column"] == "prompt"
    assert cfg["engine"]["dtype"] == "auto" and cfg["engine"]["backend"] == "" and cfg["model"] == "smollm2-135m"
    # a flag given overrides the file; one left out keeps the file's value
    path = tmp_path / "gen.yaml"
    path.write_text(yaml.safe_dump({"out": "o", "sampling": {"temperature": 0.2, "max_tokens": 9}}))
    again = yaml.safe_load(run_cai("generate", "--config", str(path), "--max-tokens", "11", "--print-config",
                                   check=True).stdout)
    assert again["sampling"]["temperature"] == 0.2 and again["sampling"]["max_tokens"] == 11


def test_eval_judge_print_config_round_trips_and_flags_land_on_their_fields(tmp_path):
    cfg = _round_trip(tmp_path, "eval", "judge", "--data", "pairs.jsonl", "--judge", "j", "--one-order",
                      "--no-few-shot", "--principles", "3", "--seed", "2", "--engine", "hf", "top_k=5")
    assert cfg["data"] == "pairs.jsonl" and cfg["judge"] == "j" and cfg["engine"]["backend"] == "hf"
    assert cfg["both_orders"] is False and cfg["few_shot"] is False and cfg["principles"] == 3
    assert cfg["seed"] == 2 and cfg["top_k"] == 5 and cfg["out"] == ""
    assert cfg["mode"] == "compare" and cfg["clamp"] == [0.4, 0.6] and cfg["batch_pairs"] == 256  # LabelConfig's


def test_old_flags_keep_their_meaning():
    crit = yaml.safe_load(run_cai("critique", "--out", "o", "--max-tokens", "50", "--revision-max-tokens", "70",
                                  "--temperature", "0.3", "--filters", "none", "--no-few-shot", "--print-config",
                                  check=True).stdout)
    assert [crit[s]["max_tokens"] for s in ("answer", "critique", "revision")] == [50, 50, 70]
    assert {crit[s]["temperature"] for s in ("answer", "critique", "revision")} == {0.3}
    assert crit["filters"] == [] and crit["few_shot"] is False
    assert crit["rounds"] == 2 and crit["retries"] == 5 and crit["seed"] == 0  # CritiqueConfig's defaults
    lab = yaml.safe_load(run_cai("label", "--data", "d", "--out", "o", "--clamp", "0.3", "0.7", "--print-config",
                                 check=True).stdout)
    assert lab["clamp"] == [0.3, 0.7] and lab["mode"] == "compare" and lab["engine"]["max_model_len"] == 4096


def test_bad_keys_name_file_line_and_column(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("out: o\nsampling:\n  tmperature: 1\n")
    r = run_cai("generate", "--config", str(path))
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert r.stderr.startswith(f"cai: error: {path}:3:15: sampling.tmperature: unknown key"), r.stderr
    path.write_text("data: d\njudge: j\nprinciples: 0\n")
    r = run_cai("eval", "judge", "--config", str(path), "--print-config")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert r.stderr.startswith(f"cai: error: {path}:3:13: principles: principles must be >= 1"), r.stderr
    # a bad flag value names the flag, a missing output names --out
    r = run_cai("sample", "--n", "1", "--print-config")
    assert r.returncode == 2 and r.stderr.strip() == ("cai: error: --n: need at least 2 responses per prompt to "
                                                      "form pairs, got 1")
    r = run_cai("generate")
    assert r.returncode == 2 and r.stderr.strip().startswith("cai: error: --out: the following arguments are required")


def test_generate_runs_from_yaml(tmp_path, tiny_model):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": p}) + "\n"
                               for i, p in enumerate(["Say hi.", "How do I pick a lock?"])))
    gen = tmp_path / "generate.yaml"
    gen.write_text(yaml.safe_dump({"model": str(tiny_model), "prompts": str(prompts), "out": str(tmp_path / "g"),
                                   "engine": {"backend": "hf", "dtype": "float32", "cache": str(tmp_path / "c.sqlite")},
                                   "sampling": {"max_tokens": 5, "temperature": 0.0, "n": 2}, "seed": 3}))
    run_cai("generate", "--config", str(gen), check=True)
    m = json.loads((tmp_path / "g" / "manifest.json").read_text())
    assert m["rows"] == 4 and m["errors"] == 0 and m["provenance"]["seed"] == 3
    assert json.loads(m["provenance"]["sampling"])["max_tokens"] == 5 and m["provenance"]["engine"] == "hf"
    import datasets
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "g" / "responses" / "*.parquet"), split="train")
    assert sorted(ds["id"]) == ["p0", "p0", "p1", "p1"] and all(n <= 5 for n in ds["completion_tokens"])


def test_eval_values_flags_default_to_the_values_config():
    # `cai eval values` builds a ValuesConfig from flags; a flag left out must give the dataclass default
    import dataclasses

    from cai.cli import build_parser
    from cai.evaluate.config import ValuesConfig
    a = build_parser().parse_args(["eval", "values", "--model", "m", "--out", "o"])
    d = {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
         for f in dataclasses.fields(ValuesConfig)}
    for flag in ("baseline", "constitution", "harmful", "benign", "judge", "temperature", "max_tokens", "system",
                 "bootstrap", "seed", "limit"):
        assert getattr(a, flag) == d[flag], flag
    assert a.max_model_len is None  # the engine section's own default (2048) then stands
