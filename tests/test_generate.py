"""`cai generate` end to end, the dataset layout, resumable runs, and one-line errors for bad input."""
from __future__ import annotations

import json

import pytest

from cai.data.layout import read_config, write_dataset
from cai.data.sources import load_prompts
from cai.data.store import RecordLog, RunDir
from cai.errors import InputError
from tests.conftest import REPO, run_cai


def test_generate_writes_hub_layout(tmp_path, tiny_model):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"q{i}", "question": f"Question {i}?", "topic": "t"}) + "\n"
                               for i in range(5)))
    out = tmp_path / "out"
    r = run_cai("generate", "--model", str(tiny_model), "--engine", "hf", "--prompts", str(prompts), "--column",
                "question", "--out", str(out), "--max-tokens", "6", "--n", "2", "--cache", str(tmp_path / "c.db"))
    assert r.returncode == 0, r.stderr[-2000:]
    import datasets
    ds = datasets.load_dataset(str(out), "responses", split="train")
    assert len(ds) == 10 and set(ds["id"]) == {f"q{i}" for i in range(5)}
    row = ds[0]
    assert row["messages"][0] == {"role": "user", "content": "Question 0?"}
    assert row["messages"][1]["role"] == "assistant" and row["topic"] == "t"
    assert row["model_hash"] and row["cai_version"] and row["completion_tokens"] == 6
    card = (out / "README.md").read_text()
    assert "config_name: responses" in card
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows"] == 10 and manifest["errors"] == 0
    pq = datasets.load_dataset("parquet", data_files=str(out / "responses" / "*.parquet"), split="train")
    assert len(pq) == 10
    # rerunning the same command reuses everything; another configuration is refused
    again = run_cai("generate", "--model", str(tiny_model), "--engine", "hf", "--prompts", str(prompts),
                    "--column", "question", "--out", str(out), "--max-tokens", "6", "--n", "2",
                    "--cache", str(tmp_path / "c.db"))
    assert again.returncode == 0 and json.loads((out / "manifest.json").read_text())["engine_requests"] == 0
    other = run_cai("generate", "--model", str(tiny_model), "--engine", "hf", "--prompts", str(prompts),
                    "--column", "question", "--out", str(out), "--max-tokens", "7")
    assert other.returncode == 2 and "--overwrite" in other.stderr and "params" in other.stderr


@pytest.mark.parametrize("content,expect", [
    ('{"prompt": "a"}\n{"prompt": \n', r"bad\.jsonl:2:\d+: invalid JSON"),
    ('{"prompt": "a"}\n{"text": "b"}\n', r"bad\.jsonl:2: prompt: missing column 'prompt'"),
    ("", r"bad\.jsonl: no prompts: the file is empty"),
    ('{"prompt": "  "}\n', r"bad\.jsonl:1: prompt: empty prompt"),
    ('{"prompt": 3}\n', r"bad\.jsonl:1: prompt: expected a string"),
    ('[1, 2]\n', r"bad\.jsonl:1:1: expected a JSON object"),
    ('{"id": 1, "prompt": "a"}\n{"id": 1, "prompt": "b"}\n', r"bad\.jsonl:2: id: duplicate id '1'"),
])
def test_bad_prompt_files_fail_in_one_line(tmp_path, content, expect):
    import re
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content)
    r = run_cai("generate", "--prompts", str(bad), "--out", str(tmp_path / "o"), "--engine", "hf")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert re.search(expect, lines[0]), lines[0]
    assert not (tmp_path / "o").exists()  # nothing written on bad input


def test_prompt_sources(tmp_path):
    (tmp_path / "p.csv").write_text("id,prompt\na,Hello?\nb,World?\n")
    assert [r["prompt"] for r in load_prompts(tmp_path / "p.csv")] == ["Hello?", "World?"]
    (tmp_path / "q.csv").write_text("prompt\nx\n")
    with pytest.raises(InputError, match=r"q\.csv:2: text: missing column 'text'"):
        load_prompts(tmp_path / "q.csv", column="text")
    write_dataset(tmp_path / "ds", {"responses": [{"id": "1", "prompt": "Hi?"}]}, {}, title="t")
    assert load_prompts(tmp_path / "ds")[0]["prompt"] == "Hi?"
    rows = load_prompts(REPO / "data" / "red_team.jsonl")
    assert len(rows) >= 150 and len({r["category"] for r in rows}) >= 8
    helpful = load_prompts(REPO / "data" / "helpful.jsonl")
    assert len(helpful) >= 75 and sum(r["edgy"] for r in helpful) >= 30
    (tmp_path / "p.txt").write_text("x")
    with pytest.raises(InputError, match="unsupported file type"):
        load_prompts(tmp_path / "p.txt")


def test_record_log_ignores_torn_lines_and_dedupes(tmp_path):
    log = RecordLog(tmp_path / "log")
    log.append({"key": "a", "v": 1})
    log.append({"key": "b", "v": 1})
    log.close()
    shard = next((tmp_path / "log").glob("shard-*.jsonl"))
    with open(shard, "a") as f:
        f.write('{"key": "c", "v"')  # killed mid-write
    again = RecordLog(tmp_path / "log")
    assert set(again.load()) == {"a", "b"}
    again.append({"key": "a", "v": 2})
    again.close()
    assert RecordLog(tmp_path / "log").load()["a"]["v"] == 2


def test_run_dir_refuses_foreign_configuration(tmp_path):
    RunDir(tmp_path / "o", {"x": 1})
    RunDir(tmp_path / "o", {"x": 1})  # same configuration: resume
    with pytest.raises(InputError, match="changed: x"):
        RunDir(tmp_path / "o", {"x": 2})
    RunDir(tmp_path / "o", {"x": 2}, overwrite=True)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "keep.txt").write_text("precious")
    for overwrite in (False, True):  # --overwrite never deletes what cai did not write
        with pytest.raises(InputError, match="not written by cai"):
            RunDir(tmp_path / "foreign", {"x": 1}, overwrite=overwrite)
    assert (tmp_path / "foreign" / "keep.txt").read_text() == "precious"
    write_dataset(tmp_path / "o2", {"a": [{"x": 1}]}, {}, title="t")
    assert read_config(tmp_path / "o2", "a") == [{"x": 1}]
    with pytest.raises(InputError, match="no config 'nope'"):
        read_config(tmp_path / "o2", "nope")
