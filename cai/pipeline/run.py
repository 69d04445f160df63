"""Run a resolved pipeline: skip finished stages, run the rest in order, and record what happened.

    1. plan: each stage is cached (its finished marker exists), forced (`--from`), or runs, with a reason
    2. run each stage that must, in its own process by default (one vLLM engine per process, memory freed)
    3. after each stage, write its finished marker atomically, then `RUN_DIR/pipeline.json`
    4. write the report (`report.html`, `report.md`)

A stage killed half-way leaves its output directory without a marker; the rerun runs it again in the
same directory, where the stage resumes from its own record log (dataset stages) or last checkpoint
(trainers). A failure stops the pipeline with one line naming the stage; finished stages are kept.
"""
from __future__ import annotations

import fcntl
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from cai.config import to_dict
from cai.data.store import die_with_parent
from cai.engine.memory import killed_message
from cai.errors import CaiError, InputError, PartialRunError
from cai.pipeline.spec import Pipeline, Stage

STATE = ".cai"


class StageFailed(CaiError):
    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def plan(p: Pipeline, from_stage: str | None = None) -> list[dict[str, Any]]:
    """What a run would do: one entry per stage with `status` (cached | run) and `reason`."""
    previous = _read_json(p.run_dir / "pipeline.json").get("stages", {})
    if from_stage is not None:
        p.stage(from_stage)  # an unknown name is an InputError naming --from
    forced, out, reruns = False, [], set()
    for s in p.stages:
        forced = forced or s.name == from_stage
        if forced:
            status, reason = "run", f"forced by --from {from_stage}"
        elif s.marker.is_file() and s.out.exists():
            status, reason = "cached", "finished earlier with the same inputs"
        elif s.marker.is_file():
            status, reason = "run", "finished earlier, but its output directory is gone"
        elif s.out.exists():
            status, reason = "run", "interrupted earlier: resumes in its output directory"
        else:
            status, reason = "run", _why(s, previous.get(s.name), reruns)
        if status == "run":
            reruns.add(s.name)
        out.append({"stage": s.name, "kind": s.kind.name, "status": status, "reason": reason, "key": s.key,
                    "out": str(s.out)})
    for name, why in p.skipped.items():  # after the real stages: `run` zips stages with entries
        out.append({"stage": name, "kind": "-", "status": "skip", "reason": f"optional: {why}", "key": "",
                    "out": "-"})
    return out


def _why(s: Stage, prev: dict | None, reruns: set) -> str:
    if not prev or "inputs" not in prev:
        return "not run yet"
    old, new = prev["inputs"], s.inputs
    why = [f"upstream {u} changed" + (" (reruns)" if u in reruns else "")
           for u in new["upstream"] if old.get("upstream", {}).get(u) != new["upstream"][u]]
    parts = sorted(k for k in set(old.get("constitution", {})) | set(new["constitution"])
                   if old.get("constitution", {}).get(k) != new["constitution"].get(k))
    if parts:
        why.append(f"constitution changed ({', '.join(parts)})")
    changed = _diff(old.get("config", {}), new["config"])
    if changed:
        why.append(f"config changed ({', '.join(changed[:6])}{', ...' if len(changed) > 6 else ''})")
    for comp, label in (("models", "model weights changed"), ("files", "input file changed")):
        keys = sorted(k for k in set(old.get(comp, {})) | set(new[comp]) if old.get(comp, {}).get(k) != new[comp].get(k))
        if keys:
            why.append(f"{label} ({', '.join(keys)})")
    return "; ".join(why) or "inputs changed"


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str) for d in _diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


def print_plan(entries: list[dict[str, Any]], file: TextIO = sys.stdout) -> None:
    width = max(len(e["stage"]) for e in entries)
    kwidth = max(len(e["kind"]) for e in entries)
    for e in entries:
        print(f"{e['stage'].ljust(width)}  {e['kind'].ljust(kwidth)}  {e['status'].ljust(6)}  {e['reason']}"
              f"  -> {e['out']}", file=file)


def run(p: Pipeline, from_stage: str | None = None, *, log: TextIO = sys.stderr) -> dict[str, Any]:
    """Run the pipeline; returns the record also written to `RUN_DIR/pipeline.json`."""
    entries = plan(p, from_stage)
    p.run_dir.mkdir(parents=True, exist_ok=True)
    lock = _lock(p.run_dir)  # held until this process ends, however it ends (kill -9 included)
    try:
        record = {"name": p.name, "file": p.file, "run_dir": str(p.run_dir), "source": p.source,
                  "started_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "stages": {}}
        previous = _read_json(p.run_dir / "pipeline.json").get("stages", {})
        for name, why in p.skipped.items():
            print(f"[-] {name}: skipped (optional; {why})", file=log, flush=True)
        clock = _Clock(p, entries)
        for i, (s, e) in enumerate(zip(p.stages, entries), 1):
            _run_stage(p, i, s, e, record, previous, log, clock)
        record["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        _merge_write(p, record, previous)
    finally:
        lock.close()
    return record


def duration(secs: float) -> str:
    """`37.8 s`, `5 min 19 s`, `1 h 12 min`: what a person reads at a glance."""
    if secs < 60:
        return f"{secs:.1f} s"
    m, sec = divmod(round(secs), 60)
    return f"{m} min {sec} s" if m < 60 else f"{m // 60} h {m % 60} min"


def earlier_seconds(s: Stage) -> float | None:
    """How long this stage took the last time it finished in this run directory, under any key (an
    edited config rarely changes a stage's cost much): the estimate of what it will take now."""
    best = None
    for marker in s.marker.parent.glob(f"{s.name}-*.done.json"):
        done = _read_json(marker)
        if done.get("stage") == s.name and isinstance(done.get("seconds"), (int, float)):
            if best is None or done.get("finished_at", "") > best.get("finished_at", ""):
                best = done
    return None if best is None else float(best["seconds"])


class _Clock:
    """Elapsed time since `cai run` started and an estimate of what remains: the stages still to run,
    each at what it took the last time it finished here; stages never timed here are named instead."""

    def __init__(self, p: Pipeline, entries: list[dict]):
        self.t0 = time.perf_counter()
        self.todo = {s.name: earlier_seconds(s) for s, e in zip(p.stages, entries) if e["status"] == "run"}

    def finished(self, name: str) -> None:
        self.todo.pop(name, None)

    def line(self, running: str | None = None, running_for: float = 0.0) -> str:
        known = [(n, t) for n, t in self.todo.items() if t is not None]
        unknown = [n for n, t in self.todo.items() if t is None]
        left = sum(max(t - running_for, 0.0) if n == running else t for n, t in known)
        parts = [f"{duration(time.perf_counter() - self.t0)} elapsed"]
        if known:
            parts.append(f"about {duration(left)} left" + (" for the rest" if unknown else "") + " (earlier runs)")
        if unknown:
            parts.append(f"not timed here yet: {', '.join(unknown)}")
        return "; ".join(parts)


def _run_stage(p: Pipeline, i: int, s: Stage, e: dict, record: dict, previous: dict, log: TextIO,
               clock: _Clock) -> None:
    head = f"[{i}/{len(p.stages)}] {s.name} ({s.kind.name})"
    entry = {"kind": s.kind.name, "key": s.key, "out": str(s.out), "inputs": s.inputs, "upstream": s.upstream}
    if e["status"] == "cached":
        done = _read_json(s.marker)
        print(f"{head}: cached -> {s.out}", file=log, flush=True)
        record["stages"][s.name] = {**entry, "status": "cached", "seconds": done.get("seconds"),
                                    "summary": done.get("summary")}
        return
    if e["reason"].startswith("forced") and s.out.exists():
        _set_aside(s)
    why = "first run in this run directory" if e["reason"] == "not run yet" else e["reason"]
    print(f"{head}: starting ({why}); {clock.line()}", file=log, flush=True)
    t0 = time.perf_counter()
    try:
        summary = run_isolated(p, s) if p.isolate else execute(s.kind, s.config)
    except CaiError as err:
        secs = time.perf_counter() - t0
        record["stages"][s.name] = {**entry, "status": "failed", "seconds": round(secs, 1), "error": str(err)}
        _merge_write(p, record, previous)
        kept = [x.name for x in p.stages[:i - 1]]
        print(f"{head}: failed after {secs:.1f} s", file=log, flush=True)
        raise StageFailed(f"stage {s.name} ({s.kind.name}) failed after {secs:.0f} s: {err}; finished stages are "
                          f"kept ({', '.join(kept) or 'none'}); fix it and rerun the same command to continue",
                          getattr(err, "exit_code", 1)) from None
    secs = time.perf_counter() - t0
    # the marker last: its presence is what "finished" means to every later run
    atomic_json(s.marker, {"stage": s.name, "kind": s.kind.name, "key": s.key, "out": str(s.out),
                            "seconds": round(secs, 2), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                            "inputs": s.inputs, "summary": jsonable(summary)})
    record["stages"][s.name] = {**entry, "status": "done", "seconds": round(secs, 2), "summary": jsonable(summary)}
    _merge_write(p, record, previous)
    clock.finished(s.name)
    print(f"{head}: done in {duration(secs)}; {clock.line()} -> {s.out}", file=log, flush=True)


def _lock(run_dir: Path):
    """One `cai run` per run directory at a time: two would write the same stage directories."""
    (run_dir / STATE).mkdir(parents=True, exist_ok=True)
    fh = open(run_dir / STATE / "lock", "w")  # noqa: SIM115 - held for the run
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise InputError("another `cai run` is running in this run directory", file=run_dir) from None
    return fh


def execute(kind, cfg) -> Any:
    """Run one stage in this process. Trainers resume from their last checkpoint when one exists."""
    if kind.resumable:
        out = cfg
        for k in kind.out_field.split("."):
            out = getattr(out, k)
        return kind.fn(cfg, resume=has_checkpoint(out))
    return kind.fn(cfg)


def has_checkpoint(output_dir: str | Path) -> bool:
    """A trainer's output dir holds a finished checkpoint (`checkpoints/step-N/state.json`): resume from it."""
    return any((p / "state.json").is_file() for p in (Path(output_dir) / "checkpoints").glob("step-*"))


def run_isolated(p: Pipeline, s: Stage) -> Any:
    """Run one stage in a child process (`python -m cai.pipeline.child SPEC`), sharing this terminal so
    the stage's own progress bar shows. The child dies with this process (PR_SET_PDEATHSIG), so a
    kill -9 here never leaves a stage running behind the rerun."""
    state = p.run_dir / STATE
    spec = state / f"stage-{s.name}.json"
    result = state / f"stage-{s.name}.result.json"
    result.unlink(missing_ok=True)
    atomic_json(spec, {"kind": s.kind.name, "config": to_dict(s.config), "file": p.file,
                        "prefix": ["stages", s.name], "result": str(result)})
    launcher = shlex.split(s.launch) if s.launch else [sys.executable]  # `accelerate launch ... -m MODULE` too
    rc = subprocess.call([*launcher, "-m", "cai.pipeline.child", str(spec)], preexec_fn=die_with_parent)
    if rc != 0:
        res = _read_json(result)
        message = res.get("error") or killed_message(rc, "the stage process") or \
            f"the stage process exited with code {rc}"
        cls = {2: InputError, 3: PartialRunError}.get(rc)
        if cls is InputError:
            raise StageFailed(message, 2)
        raise StageFailed(message, 3 if cls else (rc if 0 < rc < 128 else 1))
    return _read_json(result).get("summary")


def _set_aside(s: Stage) -> None:
    """`--from` reruns a finished stage from scratch; its old output is kept next to it, not deleted."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    s.marker.unlink(missing_ok=True)
    os.replace(s.out, s.out.with_name(f"{s.out.name}.replaced-{stamp}"))


def _merge_write(p: Pipeline, record: dict, previous: dict) -> None:
    """pipeline.json: this run's stages, plus stages of earlier runs not yet reached (kept for `--plan`)."""
    stages = {**{k: v for k, v in previous.items() if k in {s.name for s in p.stages}}, **record["stages"]}
    atomic_json(p.run_dir / "pipeline.json", {**record, "stages": {s.name: stages[s.name] for s in p.stages
                                                                   if s.name in stages}})


def jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x, default=str))


def atomic_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
