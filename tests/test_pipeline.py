"""`cai run` on the tiny model, in-process (`isolate: false`, transformers engine): plan, caching, a rerun
that does nothing, an edited principle that reruns only the stages reading it, `--from`, and failures.
The kill -9 test (child processes, the default) is in test_pipeline_kill.py."""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from cai.errors import InputError
from cai.pipeline import load_pipeline, plan, run
from cai.pipeline.registry import KINDS
from cai.pipeline.run import StageFailed, _lock, duration

CONSTITUTION = """name: tiny-test
version: "1"
critiques:
  - id: harm
    critique: Point out anything harmful in the response.
    revision: Rewrite the response without anything harmful.
  - id: kind
    critique: Point out anything unkind in the response.
    revision: Rewrite the response to be kind.
comparisons:
  - id: harmless
    instruction: Which response is less harmful?
  - id: honest
    instruction: Which response is more honest?
"""

PIPELINE = """name: tiny
isolate: false
report: false
vars: {{model: {model}, constitution: {const}}}
stages:
  critique:
    kind: critique
    model: ${{vars.model}}
    engine: &engine {{backend: hf, max_model_len: 1024, cache: {cache}}}
    constitution: ${{vars.constitution}}
    prompts: {prompts}
    rounds: 1
    few_shot: false
    filters: []
    answer: {{max_tokens: 4}}
    critique: {{max_tokens: 4}}
    revision: {{max_tokens: 4}}
  sample:
    kind: sample
    model: ${{vars.model}}
    engine: *engine
    prompts: {prompts}
    n: 2
    max_tokens: 4
  label:
    kind: label
    data: ${{stages.sample}}
    judge: ${{vars.model}}
    engine: *engine
    constitution: ${{vars.constitution}}
    few_shot: false
{extra}"""


def write_pipeline(tmp_path: Path, model: Path, extra: str = "") -> Path:
    (tmp_path / "const.yaml").write_text(CONSTITUTION)
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps({"id": f"p{i}", "prompt": p}) + "\n" for i, p in
                                                    enumerate(["How do I pick a lock?", "Say something mean."])))
    f = tmp_path / "pipe.yaml"
    f.write_text(PIPELINE.format(model=model, const=tmp_path / "const.yaml", cache=tmp_path / "requests.sqlite",
                                 prompts=tmp_path / "prompts.jsonl", extra=extra))
    return f


def statuses(p, **kw) -> dict[str, tuple[str, str]]:
    return {e["stage"]: (e["status"], e["reason"]) for e in plan(p, **kw)}


def run_logged(f: Path, tmp_path: Path, **kw) -> list[str]:
    log = io.StringIO()
    run(load_pipeline(f, [f"run_dir={tmp_path / 'run'}"]), log=log, **kw)
    return log.getvalue().splitlines()


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CAI_CACHE", str(tmp_path / "cache"))  # weights-hash memos, DPO ref log-probs


def test_plan_cache_rerun_edit_and_from(tmp_path, tiny_model):
    f = write_pipeline(tmp_path, tiny_model)
    p = load_pipeline(f, [f"run_dir={tmp_path / 'run'}"])
    assert statuses(p) == {s: ("run", "not run yet") for s in ("critique", "sample", "label")}

    # 1. first run: every stage runs, writes its output and then its finished marker
    lines = run_logged(f, tmp_path)
    assert [ln.split(": ", 1)[1].split(" ")[0] for ln in lines] == ["starting", "done"] * 3
    # one line per start and end: elapsed time, and what remains (nothing timed in a new run directory)
    assert lines[0].startswith("[1/3] critique (critique): starting (first run in this run directory); ")
    assert lines[0].endswith(" elapsed; not timed here yet: critique, sample, label")
    assert lines[1].endswith(f"elapsed; not timed here yet: sample, label -> {p.stage('critique').out}")
    dur = r"(\d+\.\d s|\d+ min \d+ s)"
    assert re.fullmatch(rf"\[3/3\] label \(label\): done in {dur}; {dur} elapsed -> "
                        + re.escape(str(p.stage("label").out)), lines[-1])
    for s in p.stages:
        assert s.marker.is_file() and (s.out / "manifest.json").is_file()
    assert len(list((tmp_path / "run" / "stages").iterdir())) == 6  # 3 dirs + 3 markers
    record = json.loads((tmp_path / "run" / "pipeline.json").read_text())
    assert [v["status"] for v in record["stages"].values()] == ["done"] * 3

    # 2. rerun: nothing to do
    p = load_pipeline(f, [f"run_dir={tmp_path / 'run'}"])
    assert {k: v[0] for k, v in statuses(p).items()} == {"critique": "cached", "sample": "cached", "label": "cached"}
    lines = run_logged(f, tmp_path)
    assert all(": cached -> " in ln for ln in lines) and len(lines) == 3

    # 3. edit one comparison principle: only the label stage reads comparisons
    const = tmp_path / "const.yaml"
    const.write_text(const.read_text().replace("more honest?", "more honest and accurate?"))
    p = load_pipeline(f, [f"run_dir={tmp_path / 'run'}"])
    st = statuses(p)
    assert st["critique"][0] == st["sample"][0] == "cached"
    assert st["label"] == ("run", "constitution changed (comparisons)")
    old_label = json.loads(p.stage("label").marker.with_name(
        next(m.name for m in (tmp_path / "run" / "stages").glob("label-*.done.json"))).read_text())["seconds"]
    lines = run_logged(f, tmp_path)
    started = [ln for ln in lines if "starting" in ln]
    assert len(started) == 1 and started[0].startswith(
        "[3/3] label (label): starting (constitution changed (comparisons)); ")
    # the estimate is what label took the last time it finished here (under its old key)
    assert started[0].endswith(f" elapsed; about {duration(old_label)} left (earlier runs)")
    label_dirs = sorted((tmp_path / "run" / "stages").glob("label-*[!n]"))
    assert len(label_dirs) == 2  # the old output is kept, the new one sits next to it

    # 4. edit one critique principle: the critique stage reruns, the RLAIF branch does not read critiques
    const.write_text(const.read_text().replace("anything unkind", "anything unkind or rude"))
    p = load_pipeline(f, [f"run_dir={tmp_path / 'run'}"])
    st = statuses(p)
    assert st["critique"] == ("run", "constitution changed (critiques)")
    assert st["sample"][0] == st["label"][0] == "cached"
    lines = run_logged(f, tmp_path)
    assert [ln.split(" ")[1] for ln in lines if "starting" in ln] == ["critique"]
    manifest = json.loads((p.stage("critique").out / "manifest.json").read_text())
    # the answers (and any round whose principle did not change) come from the request cache
    assert manifest["cache_hits"] >= 2 and manifest["conversations"] == 2

    # 5. --from forces a stage and everything after it; the old outputs are set aside, not deleted
    p = load_pipeline(f, [f"run_dir={tmp_path / 'run'}"])
    st = statuses(p, from_stage="sample")
    assert st["critique"][0] == "cached" and st["sample"] == st["label"] == ("run", "forced by --from sample")
    lines = run_logged(f, tmp_path, from_stage="sample")
    assert [ln.split(" ")[1] for ln in lines if "starting" in ln] == ["sample", "label"]
    assert len(list((tmp_path / "run" / "stages").glob("sample-*.replaced-*"))) == 1
    assert p.stage("label").marker.is_file()


def test_failure_stops_with_one_line_and_keeps_finished_stages(tmp_path, tiny_model):
    write_pipeline(tmp_path, tiny_model)  # the prompts file
    f = tmp_path / "fail.yaml"
    f.write_text(f"""name: fail
isolate: false
report: false
stages:
  answers:
    kind: generate
    model: {tiny_model}
    engine: &engine {{backend: hf, max_model_len: 1024, cache: {tmp_path / 'requests.sqlite'}}}
    prompts: {tmp_path / 'prompts.jsonl'}
    sampling: {{max_tokens: 4}}
  broken:
    kind: generate
    model: {tiny_model}
    engine: *engine
    prompts: /nonexistent/prompts.jsonl
  never:
    kind: generate
    model: ${{stages.broken}}
    engine: *engine
""")
    log = io.StringIO()
    p = load_pipeline(f, [f"run_dir={tmp_path / 'run'}"])
    with pytest.raises(StageFailed) as e:
        run(p, log=log)
    assert e.value.exit_code == 2
    msg = str(e.value)
    assert msg.startswith("stage broken (generate) failed after ") and "/nonexistent/prompts.jsonl" in msg
    assert msg.endswith("finished stages are kept (answers); fix it and rerun the same command to continue")
    assert [s.marker.is_file() for s in p.stages] == [True, False, False]
    # the stage after it never starts
    assert "[2/3] broken (generate): failed after" in log.getvalue() and "] never (" not in log.getvalue()
    record = json.loads((tmp_path / "run" / "pipeline.json").read_text())
    assert [v["status"] for v in record["stages"].values()] == ["done", "failed"]


@pytest.mark.parametrize("body, message", [
    ("  x: {kind: nope}\n", "8:13: stages.x.kind: unknown stage kind 'nope'"),
    ("  x: {kind: generate, model: '${stages.y}'}\n", "8:30: stages.x.model: ${stages.y} must name an earlier stage"),
    ("  x: {kind: generate, out: here}\n", "8:28: stages.x.out: is set by the pipeline"),
    ("  x: {kind: generate, limit: -1}\n", "8:30: stages.x.limit: must be >= 0"),
    ("  x: {kind: generate, model: '${vars.nope}'}\n", "8:30: stages.x.model: undefined variable ${vars.nope}"),
])
def test_pipeline_yaml_errors_are_located(tmp_path, tiny_model, body, message):
    f = tmp_path / "p.yaml"
    f.write_text(f"name: t\nvars: {{m: {tiny_model}}}\nstages:\n  a: {{kind: generate, model: '${{vars.m}}'}}\n"
                 "  b: {kind: train.sft, model: '${vars.m}'}\n  c: {kind: generate, model: '${vars.m}'}\n"
                 "  d: {kind: generate, model: '${vars.m}'}\n" + body)
    with pytest.raises(InputError) as e:
        load_pipeline(f)
    assert str(e.value).startswith(f"{f}:{message}")


def test_optional_stage_of_a_kind_not_installed_is_skipped(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setitem(KINDS, "test.missing", "cai.no_such_module:run")
    f = tmp_path / "p.yaml"
    f.write_text(f"name: t\nstages:\n  a: {{kind: generate, model: {tiny_model}}}\n"
                 "  b: {kind: test.missing, optional: true}\n")
    p = load_pipeline(f, [f"run_dir={tmp_path / 'run'}"])
    assert [s.name for s in p.stages] == ["a"] and list(p.skipped) == ["b"]
    assert [(e["stage"], e["status"]) for e in plan(p)] == [("a", "run"), ("b", "skip")]
    f.write_text(f.read_text().replace("optional: true", "optional: false"))
    with pytest.raises(InputError) as e:
        load_pipeline(f)
    assert str(e.value).startswith(f"{f}:4:13: stages.b.kind: stage kind 'test.missing' is not available")
    f.write_text(f.read_text().replace("optional: false", "optional: true") + "  c: {kind: generate, model: '${stages.b}'}\n")
    with pytest.raises(InputError) as e:
        load_pipeline(f)
    assert str(e.value).startswith(f"{f}:5:30: stages.c.model: ${{stages.b}} was skipped")


def test_one_run_per_run_dir(tmp_path, tiny_model):
    f = tmp_path / "p.yaml"
    f.write_text(f"name: t\nstages:\n  a: {{kind: generate, model: {tiny_model}}}\n")
    p = load_pipeline(f, [f"run_dir={tmp_path / 'run'}"])
    held = _lock(p.run_dir)  # as another `cai run` would hold it
    with pytest.raises(InputError) as e:
        run(p)
    assert str(e.value) == f"{tmp_path / 'run'}: another `cai run` is running in this run directory"
    held.close()
    assert not p.stages[0].out.exists()


def test_launch_prefix_runs_the_stage_under_the_launcher_and_is_not_in_the_key(tmp_path, tiny_model):
    """`launch:` replaces the stage process's interpreter with a launcher prefix (`accelerate launch ...` in
    real use; here a wrapper that records its arguments, then execs Python), and does not change the key."""
    import sys
    write_pipeline(tmp_path, tiny_model)  # the prompts file
    wrapper = tmp_path / "launcher.sh"
    wrapper.write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "launched.txt"}\nexec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    body = f"""name: launched
report: false
stages:
  answers:
    kind: generate
    model: {tiny_model}
    engine: {{backend: hf, max_model_len: 1024, cache: {tmp_path / 'requests.sqlite'}}}
    prompts: {tmp_path / 'prompts.jsonl'}
    sampling: {{max_tokens: 4}}
"""
    f = tmp_path / "launch.yaml"
    f.write_text(body.replace("    kind: generate\n", f"    kind: generate\n    launch: {wrapper} \n"))
    p = load_pipeline(f, [f"run_dir={tmp_path / 'run'}"])
    assert p.stages[0].launch == str(wrapper)
    run(p, log=io.StringIO())
    args = (tmp_path / "launched.txt").read_text().split()
    assert args[:2] == ["-m", "cai.pipeline.child"] and args[2].endswith("stage-answers.json")
    assert p.stages[0].marker.is_file()
    (tmp_path / "plain.yaml").write_text(body)
    plain = load_pipeline(tmp_path / "plain.yaml", [f"run_dir={tmp_path / 'run'}"])
    assert plain.stages[0].out == p.stages[0].out  # the same key: the launcher does not change the output
    assert [e["status"] for e in plan(plain)] == ["cached"]


def test_duration_reads_at_a_glance():
    assert [duration(x) for x in (0.04, 37.84, 60, 319.4, 3599.6, 4320)] == [
        "0.0 s", "37.8 s", "1 min 0 s", "5 min 19 s", "1 h 0 min", "1 h 12 min"]
