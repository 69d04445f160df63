"""`cai eval values` on mistaken inputs: one line naming the file or flag, exit 2, before any answering
process starts, and nothing deleted or overwritten that cai did not write."""
from __future__ import annotations

import pytest
from conftest import one_error_line, run_cai


def test_out_must_be_new_empty_or_cai_written(tmp_path, tiny_model):
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    base = ["eval", "values", "--model", str(tiny_model), "--baseline", str(tiny_model), "--no-judge"]
    one_error_line(run_cai(*base, "--out", str(afile)), "afile", "--out", "not a directory")
    assert afile.read_text() == "mine\n"
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "values.md").write_text("my table\n")
    one_error_line(run_cai(*base, "--out", str(mine)), "mine", "not written by cai")
    assert [p.name for p in mine.iterdir()] == ["values.md"] and (mine / "values.md").read_text() == "my table\n"


@pytest.mark.parametrize("flags,needles", [
    (["--model", "{tmp}/no-model"], ["no-model: model: model path does not exist"]),
    (["--baseline", "{tmp}/no-base"], ["no-base: baseline: model path does not exist"]),
    (["--harmful", "{tmp}/empty.jsonl"], ["empty.jsonl", "no prompts"]),
    (["--benign", "{tmp}/none.jsonl"], ["none.jsonl"]),
    (["--constitution", "nope"], ["no constitution named 'nope'"]),
    (["--max-model-len", "8"], ["max_model_len: must be >= 16"]),
    (["--engine-arg", "max_num_seqs"], ["max_num_seqs"]),
])
def test_mistaken_inputs_are_one_line_before_any_answer(tmp_path, tiny_model, flags, needles):
    (tmp_path / "empty.jsonl").write_text("")
    flags = [f.format(tmp=tmp_path) for f in flags]
    args = {"--model": str(tiny_model), "--baseline": str(tiny_model)}
    for k, v in zip(flags[::2], flags[1::2]):
        args[k] = v
    out = tmp_path / "out"
    r = run_cai("eval", "values", *[x for kv in args.items() for x in kv], "--out", str(out), "--no-judge",
                "--engine", "hf")
    one_error_line(r, *needles)
    assert not (out / "answers").exists()  # no answering process ran
