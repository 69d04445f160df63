"""Every user mistake of issue 9 through the CLI: exit code 2, exactly one line on stderr naming the file or
the flag, no traceback, and nothing written or deleted. The cases run in-process (`cai.cli.main`), which
returns the exit code and lets any other exception escape, failing the test; one case runs as a real
subprocess to check the process-level behaviour too. Where the check must come before the engine loads,
the model flag names a path that does not exist: loading it first would fail with a different message."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cai

from cai import cli
from cai.testing import make_prefs_dataset

NO_MODEL = "/nonexistent/model-dir"  # loading it would fail with "model path does not exist"


def _jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _prompts(tmp: Path) -> Path:
    return _jsonl(tmp / "p.jsonl", [{"id": "a", "prompt": "Say hi."}, {"id": "b", "prompt": "Count to 3."}])


def _pairs(tmp: Path, rows=None) -> Path:
    return _jsonl(tmp / "pairs.jsonl", rows or [{"id": "a", "prompt": "Hi?", "response_a": "Hello", "response_b": "Go"}])


def _gen(tmp, *extra):
    return ["generate", "--engine", "hf", "--model", NO_MODEL, "--prompts", str(_prompts(tmp)), *extra]


def _train(stage, tiny, data, tmp, *extra):
    return ["train", stage, f"model={tiny}", f"data.path={data}", f"run.output_dir={tmp / 'run'}",
            "run.batch_size=2", "run.micro_batch_size=2", "run.max_steps=1", "run.progress=false",
            f"ref_cache_dir={tmp / 'ref'}" if stage == "dpo" else "data.eval_fraction=0", *extra]


def _prefs_jsonl(tmp, rows) -> Path:
    base = {"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away."}
    return _jsonl(tmp / "prefs.jsonl", [{**base, **r} for r in rows])


# (name, build(tmp, tiny) -> argv, regex the one stderr line must match)
CASES = [
    ("out names a file", lambda t, m: _gen(t, "--out", str(_jsonl(t / "f.txt", ["x"]))),
     r"f\.txt: --out: output path exists and is not a directory"),
    ("out is the input", lambda t, m: ["label", "--engine", "hf", "--judge", NO_MODEL, "--data",
                                       str(_pairs_dir(t)), "--out", str(t / "d"), "--overwrite"],
     r"/d: --out: output directory is, or lies inside, the input"),
    ("out inside the input", lambda t, m: ["label", "--engine", "hf", "--judge", NO_MODEL, "--data",
                                           str(_pairs_dir(t)), "--out", str(t / "d" / "sub")],
     r"/d/sub: --out: output directory is, or lies inside, the input"),
    ("out is the working directory", lambda t, m: ["critique", "--engine", "hf", "--model", NO_MODEL, "--out", ".",
                                                   "--prompts", str(_prompts(t)), "--overwrite"],
     r"^cai: error: \.: --out: output directory is the working directory"),
    ("foreign dir with --overwrite", lambda t, m: _gen(t, "--overwrite", "--out", str(_foreign(t))),
     r"/foreign: --out: output directory is not empty and was not written by cai"),
    ("n 0", lambda t, m: _gen(t, "--out", str(t / "o"), "--n", "0"), r"--n: must be >= 1, got 0"),
    ("temperature -1", lambda t, m: _gen(t, "--out", str(t / "o"), "--temperature", "-1"), r"--temperature: must be >= 0"),
    ("top-p 0", lambda t, m: _gen(t, "--out", str(t / "o"), "--top-p", "0"), r"--top-p: must be in \(0, 1\]"),
    ("max-tokens 0", lambda t, m: _gen(t, "--out", str(t / "o"), "--max-tokens", "0"), r"--max-tokens: must be >= 1"),
    ("limit 0", lambda t, m: _gen(t, "--out", str(t / "o"), "--limit", "0"), r"--limit: must be >= 1, got 0"),
    ("sample top-p 2", lambda t, m: ["sample", "--engine", "hf", "--model", NO_MODEL, "--prompts", str(_prompts(t)),
                                     "--out", str(t / "o"), "--top-p", "2"], r"--top-p: must be in \(0, 1\]"),
    ("mixed column types", lambda t, m: ["generate", "--engine", "hf", "--model", NO_MODEL, "--out", str(t / "o"),
                                         "--prompts", str(_jsonl(t / "mixed.jsonl", [
                                             {"id": "a", "prompt": "x", "score": 3},
                                             {"id": "b", "prompt": "y", "score": "high"}]))],
     r"mixed\.jsonl:2:\d+: score: column 'score' holds a string here but a number on line 1"),
    ("missing local path", lambda t, m: ["label", "--engine", "hf", "--judge", NO_MODEL, "--data", "out/sampels",
                                         "--out", str(t / "o")],
     r"^cai: error: out/sampels: no such file or directory$"),
    ("messages lack content", lambda t, m: ["label", "--engine", "hf", "--judge", NO_MODEL, "--out", str(t / "o"),
                                            "--data", str(_pairs(t, [{"id": "a", "prompt": [{"role": "user"}],
                                                                      "response_a": "x", "response_b": "y"}]))],
     r"pairs\.jsonl:1: prompt: message 0 must be an object with string `role` and `content`"),
    ("duplicate pair ids", lambda t, m: ["label", "--engine", "hf", "--judge", NO_MODEL, "--out", str(t / "o"),
                                         "--data", str(_pairs(t, [{"id": "a", "prompt": "p", "response_a": "x",
                                                                   "response_b": "y"}] * 2))],
     r"pairs\.jsonl:2: id: duplicate pair id 'a'"),
    ("duplicate ids in eval judge", lambda t, m: ["eval", "judge", "--engine", "hf", "--judge", NO_MODEL, "--data",
                                                  str(_pairs(t, [{"id": "a", "prompt": "p", "response_a": "x",
                                                                  "response_b": "y", "label": "A"}] * 2))],
     r"pairs\.jsonl:2: id: duplicate pair id 'a'"),
    ("train output_dir is a file", lambda t, m: ["train", "sft", f"run.output_dir={_jsonl(t / 'f.txt', ['x'])}"],
     r"^cai: error: run\.output_dir: names a file; it must be a directory"),
    ("row after the first lacks a column", lambda t, m: _train("rm", m, _jsonl(t / "prefs.jsonl", [
        {"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away."}, {"prompt": "Hi?", "chosen": "Hello!"}]), t),
     r"prefs\.jsonl:2: rejected: line 2 lacks column\(s\) rejected"),
    ("p_chosen as a string", lambda t, m: _train("rm", m, _prefs_jsonl(t, [{}, {"p_chosen": "0.9"}]), t),
     r"prefs\.jsonl:2: p_chosen: must be a number in \[0, 1\], got '0\.9'"),
    ("p_chosen out of range", lambda t, m: _train("rm", m, _prefs_jsonl(t, [{"p_chosen": 1.5}, {}]), t),
     r"prefs\.jsonl:1: p_chosen: must be a number in \[0, 1\], got 1\.5"),
    ("not UTF-8", lambda t, m: _train("rm", m, _latin1(t), t), r"latin\.jsonl:2: data\.path: not valid UTF-8"),
    ("cdpo without p_chosen", lambda t, m: _train("dpo", m, make_prefs_dataset(t / "hard", 8, soft=False), t,
                                                  "loss_type=cdpo"),
     r"loss_type: cdpo needs soft labels .*this data has no p_chosen"),
    ("robust on coin-flip soft labels", lambda t, m: _train("dpo", m, _prefs_jsonl(t, [{"p_chosen": 0.5}] * 4),
                                                            t, "loss_type=robust", "data.eval_fraction=0"),
     r"robust_epsilon: auto: the soft labels give ε = 0\.500 .*scale the loss unbounded"),
]


def _pairs_dir(t: Path) -> Path:
    from cai.data.layout import write_dataset
    write_dataset(t / "d", {"pairs": [{"id": "a", "prompt": "Hi?", "response_a": "Hello", "response_b": "Go"}]}, {},
                  title="pairs")
    return t / "d"


def _foreign(t: Path) -> Path:
    (t / "foreign").mkdir()
    (t / "foreign" / "thesis.tex").write_text("precious")
    return t / "foreign"


def _latin1(t: Path) -> Path:
    p = t / "latin.jsonl"
    p.write_bytes(b'{"prompt": "Hi?", "chosen": "ok", "rejected": "no"}\n{"prompt": "caf\xe9", "chosen": "a", '
                  b'"rejected": "b"}\n')
    return p


@pytest.mark.parametrize("name,build,expect", CASES, ids=[c[0] for c in CASES])
def test_user_mistake_is_one_line_exit_2(name, build, expect, tmp_path, tiny_model, capsys, monkeypatch):
    import re
    monkeypatch.chdir(tmp_path if name == "missing local path" else Path(__file__).resolve().parents[1])
    (tmp_path / "out").mkdir()  # so that `out/sampels` is a typo under an existing local directory
    argv = build(tmp_path, tiny_model)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert re.search(expect, err[0]), err[0]
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    # nothing deleted; nothing written but an output directory's lock file
    assert set(before) <= set(after) and all(".cai" in str(p) or p.name == "o" for p in set(after) - set(before))


def test_subprocess_error_is_one_line_without_traceback(tmp_path):
    out = _jsonl(tmp_path / "out.txt", ["precious"])
    r = run_cai("generate", "--engine", "hf", "--model", NO_MODEL, "--prompts", str(_prompts(tmp_path)),
                "--out", str(out))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [f"cai: error: {out}: --out: output path exists and is not a directory"]
    assert out.read_text() == "precious\n"
