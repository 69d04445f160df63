"""`cai contrast` on mistaken inputs: one line naming the file or flag, exit 2, before the model loads, and
nothing deleted that cai did not write."""
from __future__ import annotations

import pytest
from conftest import run_cai


@pytest.mark.parametrize("flags,needles", [
    (["--prompts", "{tmp}/empty.jsonl"], ["empty.jsonl: no prompts"]),
    (["--prompts", "{tmp}/none.jsonl"], ["none.jsonl"]),
    (["--benign", "{tmp}/empty.jsonl"], ["empty.jsonl: no prompts"]),
    (["--constitution", "nope"], ["no constitution named 'nope'"]),
    (["--constitution", "{tmp}/bad.yaml"], ["bad.yaml:"]),
    (["--max-model-len", "8"], ["max_model_len: must be >= 16"]),
    (["--out", "{tmp}/afile"], ["afile: --out: output path exists and is not a directory"]),
    (["--out", "{tmp}/mine"], ["mine: --out: output directory is not empty and was not written by cai"]),
    (["--model", "{tmp}/no-model"], ["no-model", "model path does not exist"]),
])
def test_mistaken_inputs_are_one_line(tmp_path, tiny_model, flags, needles):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "bad.yaml").write_text("name: x\nprinciples: [\n")
    (tmp_path / "afile").write_text("mine\n")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine\n")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    args = {"--model": str(tiny_model), "--out": str(tmp_path / "out"), "--engine": "hf", "--limit": "2"}
    for k, v in zip(flags[::2], flags[1::2]):
        args[k] = v.format(tmp=tmp_path)
    r = run_cai("contrast", *[x for kv in args.items() for x in kv])
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = [ln for ln in r.stderr.splitlines() if "NUMA" not in ln]  # torch's start-up note, not cai's
    assert len(lines) == 1 and lines[0].startswith("cai: error: "), r.stderr
    assert all(n in lines[0] for n in needles), (needles, lines[0])
    assert sorted(p.name for p in tmp_path.rglob("*") if p.name != "out") == before
    assert (tmp_path / "afile").read_text() == "mine\n" and (tmp_path / "mine" / "notes.txt").read_text() == "mine\n"
