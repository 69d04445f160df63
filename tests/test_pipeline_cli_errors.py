"""`cai run` on mistaken pipelines and overrides: one line naming the file or key, exit 2, and nothing
deleted or written that cai did not write. And a stage the kernel kills (SIGKILL) is named as such."""
from __future__ import annotations

import pytest
from conftest import one_error_line, run_cai


@pytest.fixture
def pipe(tmp_path, tiny_model):
    f = tmp_path / "p.yaml"
    f.write_text(f"name: t\nvars: {{model: {tiny_model}}}\nstages:\n"
                 "  a: {kind: generate, model: '${vars.model}', prompts: data/eval/harmful.jsonl}\n")
    return f


def test_run_dir_must_be_a_directory_cai_run_wrote(pipe, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    for rd in (afile, afile / "sub"):
        for extra in (["--plan"], []):
            one_error_line(run_cai("run", str(pipe), f"run_dir={rd}", *extra), "run_dir:", f"{afile} is a file")
    assert afile.read_text() == "mine\n"
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "report.md").write_text("my notes\n")
    one_error_line(run_cai("run", str(pipe), f"run_dir={foreign}"), "run_dir:", "not written by `cai run`")
    assert sorted(p.name for p in foreign.iterdir()) == ["report.md"]
    assert (foreign / "report.md").read_text() == "my notes\n"
    # a new directory, and one `cai run` wrote, still plan
    assert run_cai("run", str(pipe), f"run_dir={tmp_path / 'new'}", "--plan").returncode == 0
    (tmp_path / "new" / ".cai").mkdir(parents=True)
    (tmp_path / "new" / "x").write_text("")
    assert run_cai("run", str(pipe), f"run_dir={tmp_path / 'new'}", "--plan").returncode == 0


@pytest.mark.parametrize("body,overrides,needles", [
    ("stages:\n  a: {kind: generate\n", [], ["p.yaml:3:1", "YAML syntax"]),
    ("stages:\n  a: {kind: generate, prompts: '${stages.b}'}\n  b: {kind: generate, prompts: '${stages.a}'}\n",
     [], ["p.yaml:2:32", "stages.a.prompts", "${stages.b} must name an earlier stage"]),
    ("stages:\n  a: {kind: generate, model: '${vars.m}'}\n", [], ["stages.a.model", "undefined variable ${vars.m}"]),
    ("vars: {model: x}\nstages:\n  a: {kind: generate, model: '${vars.model}'}\n", ["vars.modle=y"],
     ["vars.modle", "declares no variable 'modle' (vars: model)", "(from the command line)"]),
    ("stages:\n  a: {kind: generate}\n", ["stages.b.seed=3"],
     ["stages.b.seed", "has no stage 'b' (stages: a)"]),
    ("stages:\n  a: {kind: generate}\n", ["stages.a.sed=3"], ["stages.a.sed: unknown key"]),
    ("stages:\n  a: {kind: generate, engine: {max_model_len: 8}}\n", [], ["stages.a.engine.max_model_len", ">= 16"]),
    ("stages:\n  a: {kind: generate, engine: {backend: openai}}\n", [], ["stages.a.engine.base_urls"]),
    ("stages:\n  a: {kind: genrate}\n", [], ["p.yaml:2:13", "unknown stage kind 'genrate'"]),
    ("stages:\n  a: {kind: generate}\n", ["--from", "b"], ["--from", "no stage named 'b'"]),
    ("stages:\n  a: {kind: generate}\n", ["novalue"], ["override 'novalue' must look like key.sub=value"]),
])
def test_mistaken_pipelines_areone_error_line(tmp_path, body, overrides, needles):
    f = tmp_path / "p.yaml"
    f.write_text(body)
    one_error_line(run_cai("run", str(f), f"run_dir={tmp_path / 'run'}", *overrides, "--plan"), *needles)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.yaml"]  # nothing written


def test_a_stage_killed_by_sigkill_says_out_of_memory(pipe, tmp_path):
    # the stage's launcher kills itself with SIGKILL, as the OOM killer would kill the stage process
    pipe.write_text(pipe.read_text().replace("prompts:", "launch: \"bash -c 'kill -KILL $$'\", prompts:"))
    r = run_cai("run", str(pipe), f"run_dir={tmp_path / 'run'}", "--no-report")
    assert r.returncode == 1, r.stderr
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("cai: error:")]
    assert len(err) == 1 and "stage a (generate) failed" in err[0], r.stderr
    assert "the stage process was killed by SIGKILL (exit -9), most likely by the kernel's out-of-memory killer" \
        in err[0] and "engine.args.kv_cache_memory_bytes" in err[0]
