"""A pipeline YAML, resolved: every stage's config dataclass, its output directory, and the key that names it.

    name: hf-recipe
    run_dir: runs/hf-recipe            # optional; default runs/<name>; new, empty, or one `cai run` wrote
    isolate: true                      # optional; each stage in its own process (one vLLM engine each)
    report: true                       # optional; write report.html and report.md at the end
    vars: {model: smollm2-135m}        # "${vars.model}" substitutes (a whole-string reference keeps the type)
    stages:                            # run in order
      critique: {kind: critique, model: "${vars.model}", rounds: 1, limit: 20}
      sft:      {kind: train.sft, model: "${vars.model}", data: {path: "${stages.critique}"}}
      eval:     {kind: eval.values, optional: true, model: "${stages.sft}"}   # skipped if not installed

Besides its config fields, a stage takes `kind`, `optional` and `launch` (a launcher prefix for its
process, e.g. `accelerate launch --config_file configs/accelerate/fsdp.yaml`).

A stage's key hashes everything that fixes its output: kind and resolved config (an upstream stage's
directory enters as that stage's key), the parts of the constitution it reads, the weights hash of each
model it names, and the content of each input file it names. Its output goes to
`RUN_DIR/stages/<name>-<key>/`; an edit upstream changes the keys of exactly the stages downstream of it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cai.config import apply_overrides, from_data, to_dict
from cai.constitution import load_constitution
from cai.constitution.hashing import sha256_json
from cai.data.store import STATE
from cai.errors import InputError
from cai.models import model_hash, resolve_model
from cai.pipeline.registry import MODEL_FIELDS, KindUnavailable, StageKind, constitution_parts, load_kind
from cai.yamlio import load_yaml, locate

TOP_KEYS = ("name", "description", "run_dir", "isolate", "report", "vars", "stages")
_REF = re.compile(r"\$\{(vars|stages)\.([A-Za-z0-9_\-]+)\}")
_NAME = re.compile(r"^[A-Za-z0-9_\-]+$")
MAX_HASHED_FILE = 512 * 2**20  # larger input files enter the key by size and mtime
# Config keys that cannot change a stage's output (where caches live, progress bars): left out of the key,
# so that moving the request cache does not rerun a pipeline, and the cache file is never hashed as an input.
NOT_INPUTS = frozenset({"cache", "no_cache", "ref_cache_dir", "progress"})


@dataclass
class Stage:
    name: str
    kind: StageKind
    config: Any
    out: Path
    key: str
    inputs: dict[str, Any]
    """What the key hashes, by component (config, constitution, models, files, upstream): for `--plan`."""
    upstream: list[str] = field(default_factory=list)
    launch: str = ""
    """A launcher prefix for the stage's process, e.g. `accelerate launch --config_file configs/accelerate/fsdp.yaml`
    (how many processes run a stage does not change its output, so it is not part of the key)."""

    @property
    def marker(self) -> Path:
        """Written atomically after the stage finishes: its presence is what "finished" means."""
        return self.out.with_name(self.out.name + ".done.json")


@dataclass
class Pipeline:
    name: str
    file: str
    run_dir: Path
    isolate: bool
    report: bool
    vars: dict[str, Any]
    stages: list[Stage]
    source: dict[str, Any]
    """The pipeline YAML after overrides (provenance for the report)."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Stages marked `optional: true` whose kind is not installed here: name -> why."""

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise InputError(f"no stage named {name!r} (stages: {', '.join(s.name for s in self.stages)})",
                         field="--from")


def load_pipeline(path: str | Path, overrides: list[str] | tuple = ()) -> Pipeline:
    """Read, validate and resolve a pipeline YAML (plus `a.b=value` overrides, e.g. `vars.model=X`)."""
    file = str(path)
    data, marks = load_yaml(path)
    if not isinstance(data, dict):
        raise InputError("a pipeline must be a mapping with `stages`", file=file, line=1, col=1)
    declared = list(data["vars"]) if isinstance(data.get("vars"), dict) else []
    declared_stages = list(data["stages"]) if isinstance(data.get("stages"), dict) else []
    overridden = apply_overrides(data, overrides)

    def err(loc: tuple, message: str) -> InputError:
        if loc in overridden:
            return InputError(f"{message} (from the command line)", field=".".join(map(str, loc)))
        line, col = locate(marks, loc)
        return InputError(message, file=file, line=line, col=col, field=".".join(map(str, loc)) or None)

    for k in data:
        if k not in TOP_KEYS:
            raise err((k,), f"unknown key (expected one of: {', '.join(TOP_KEYS)})")
    name = str(data.get("name") or Path(file).stem)
    if not _NAME.match(name):
        raise err(("name",), "must be letters, digits, - and _")
    variables = data.get("vars") or {}
    stages_data = data.get("stages")
    if not isinstance(variables, dict):
        raise err(("vars",), "must be a mapping")
    for loc in sorted(overridden, key=str):
        if len(loc) >= 2 and loc[0] == "vars" and loc[1] not in declared:  # a misspelt name would do nothing
            raise err(loc, f"{file} declares no variable {loc[1]!r} (vars: {', '.join(declared) or 'none'})")
        if len(loc) >= 3 and loc[0] == "stages" and loc[1] not in declared_stages and loc[2] != "kind":
            raise err(loc, f"{file} has no stage {loc[1]!r} (stages: {', '.join(declared_stages) or 'none'}); "
                           "a new stage needs its kind")
    if not isinstance(stages_data, dict) or not stages_data:
        raise err(("stages",), "must be a non-empty mapping of stage name -> config")
    for flag in ("isolate", "report"):
        if not isinstance(data.get(flag, True), bool):
            raise err((flag,), "must be true or false")
    run_dir = Path(str(data.get("run_dir") or Path("runs") / name))
    _check_run_dir(run_dir, err)

    stages: list[Stage] = []
    skipped: dict[str, str] = {}
    for sname, body in stages_data.items():
        loc = ("stages", sname)
        if not isinstance(sname, str) or not _NAME.match(sname):
            raise err(loc, "a stage name must be letters, digits, - and _")
        if not isinstance(body, dict) or "kind" not in body:
            raise err(loc, "must be a mapping with a `kind`")
        optional, launch = body.get("optional", False), body.get("launch", "")
        if not isinstance(optional, bool):
            raise err(loc + ("optional",), "must be true or false")
        if not isinstance(launch, str) or (launch and data.get("isolate") is False):
            raise err(loc + ("launch",), "must be a command prefix, and needs `isolate: true` (the default)")
        try:
            kind = load_kind(str(body["kind"]))
        except KindUnavailable as e:
            if not optional:
                raise err(loc + ("kind",), e.message) from None
            skipped[sname] = e.message
            continue
        except InputError as e:
            raise err(loc + ("kind",), e.message) from None
        done = {s.name: s for s in stages}
        upstream: list[str] = []
        body = {k: v for k, v in body.items() if k not in ("kind", "optional", "launch")}
        resolved = _substitute(body, loc, variables, done, upstream, skipped, err)
        stages.append(_resolve_stage(sname, kind, resolved, run_dir, done, upstream, file, marks, overridden, err))
        stages[-1].launch = launch
    return Pipeline(name, file, run_dir, bool(data.get("isolate", True)), bool(data.get("report", True)),
                    variables, stages, data, skipped)


def _check_run_dir(run_dir: Path, err) -> None:
    """A run directory is new, empty, or one `cai run` wrote (it holds `.cai/` or `pipeline.json`): a file, or
    a directory of other files, is refused before anything runs (`cai run` writes its report and stages
    there, and never deletes or overwrites what it did not write)."""
    for d in (run_dir, *run_dir.parents):
        if d.exists() or d.is_symlink():
            if not d.is_dir():
                raise err(("run_dir",), f"{d} is a file; run_dir must be a directory (new, or one `cai run` "
                                        "wrote)")
            break
    if run_dir.is_dir() and any(run_dir.iterdir()) and not (
            (run_dir / STATE).is_dir() or (run_dir / "pipeline.json").is_file()):
        raise err(("run_dir",), f"{run_dir} is not empty and was not written by `cai run` (no {STATE}/ or "
                                "pipeline.json); choose a new run_dir")


# ---- one stage ---------------------------------------------------------------------------------------------

def _resolve_stage(name, kind: StageKind, body: dict, run_dir: Path, done: dict[str, Stage], upstream, file,
                   marks, overridden, err) -> Stage:
    loc = ("stages", name)
    out_path = tuple(kind.out_field.split("."))
    node = body
    for k in out_path[:-1]:
        node = node.setdefault(k, {}) if isinstance(node, dict) else node
    if not isinstance(node, dict):
        raise err(loc + out_path[:-1], "must be a mapping")
    if out_path[-1] in node:
        raise err(loc + out_path, "is set by the pipeline (RUN_DIR/stages/<name>-<key>); leave it out")
    node[out_path[-1]] = str(run_dir / "stages" / name)  # a placeholder until the key is known
    cfg = from_data(kind.config_cls, body, file=file, marks=marks, overridden=overridden, prefix=loc)

    tokens = {str(done[u].out): f"${{stages.{u}}}" for u in upstream}  # upstream keys are in `upstream`
    cdict = _replace_strings(_without(to_dict(cfg), NOT_INPUTS), tokens)
    _drop(cdict, out_path)
    inputs = {"kind": kind.name, "config": cdict, "upstream": {u: done[u].key for u in upstream},
              "constitution": _constitution_inputs(kind.name, cfg, loc, err),
              "models": _model_inputs(cfg, tokens), "files": _file_inputs(cdict)}
    key = sha256_json(inputs)[:12]
    out = run_dir / "stages" / f"{name}-{key}"
    return Stage(name, kind, _set_out(cfg, out_path, str(out)), out, key, inputs, list(upstream))


def _set_out(cfg: Any, path: tuple, value: str) -> Any:
    if len(path) == 1:
        new = dataclasses.replace(cfg, **{path[0]: value})
    else:
        new = dataclasses.replace(cfg, **{path[0]: _set_out(getattr(cfg, path[0]), path[1:], value)})
    if hasattr(cfg, "_source"):
        object.__setattr__(new, "_source", cfg._source)
    return new


def _without(v: Any, keys: frozenset) -> Any:
    if isinstance(v, dict):
        return {k: _without(x, keys) for k, x in v.items() if k not in keys}
    if isinstance(v, list):
        return [_without(x, keys) for x in v]
    return v


def _drop(d: dict, path: tuple) -> None:
    for k in path[:-1]:
        d = d[k]
    d.pop(path[-1], None)


def _constitution_inputs(kind: str, cfg: Any, loc: tuple, err) -> dict[str, str]:
    ref = getattr(cfg, "constitution", None)
    if not isinstance(ref, str) or not ref:
        return {}
    try:
        canonical = load_constitution(ref).canonical()
    except InputError as e:
        if e.file is not None:
            raise
        raise err(loc + ("constitution",), e.message) from None
    parts = constitution_parts(kind)
    if parts is None:
        return {"all": sha256_json(canonical)}
    out = {}
    for part in parts:
        node: Any = canonical
        for k in part.split("."):
            node = node.get(k) if isinstance(node, dict) else None
        out[part] = sha256_json(node)
    return out


def _model_inputs(cfg: Any, tokens: dict[str, str]) -> dict[str, str]:
    """Weights hash of each model a stage names; an upstream stage's model enters through its key instead."""
    out = {}
    for name in MODEL_FIELDS:
        ref = getattr(cfg, name, None)
        if not isinstance(ref, str) or not ref or any(ref.startswith(d) for d in tokens):
            continue
        try:
            out[name] = model_hash(resolve_model(ref))
        except Exception:  # noqa: BLE001 - an endpoint model or an unreachable hub id: its name is all we know
            out[name] = f"name:{ref}"
    return out


def _file_inputs(cdict: Any) -> dict[str, str]:
    """Content hash of every existing file a config names (prompts, data files); directories that are not
    stages or models are named by path only."""
    out: dict[str, str] = {}

    def walk(v):
        if isinstance(v, dict):
            for k, x in v.items():
                if k != "constitution":  # a constitution enters by the parts the stage reads
                    walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
        elif isinstance(v, str) and v and len(v) < 4096 and "\n" not in v:
            p = Path(v)
            try:
                if p.is_file():
                    st = p.stat()
                    out[v] = _sha256(p) if st.st_size <= MAX_HASHED_FILE else f"size:{st.st_size}:{st.st_mtime_ns}"
            except OSError:
                pass

    walk(cdict)
    return out


def _sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while b := f.read(1 << 22):
            h.update(b)
    return h.hexdigest()


# ---- ${...} substitution ------------------------------------------------------------------------------------

def _substitute(v: Any, loc: tuple, variables: dict, done: dict[str, Stage], upstream: list, skipped: dict,
                err) -> Any:
    if isinstance(v, dict):
        return {k: _substitute(x, loc + (k,), variables, done, upstream, skipped, err) for k, x in v.items()}
    if isinstance(v, list):
        return [_substitute(x, loc + (i,), variables, done, upstream, skipped, err) for i, x in enumerate(v)]
    if not isinstance(v, str) or "${" not in v:
        return v

    def value(m: re.Match) -> Any:
        space, ref = m.group(1), m.group(2)
        if space == "vars":
            if ref not in variables:
                raise err(loc, f"undefined variable ${{vars.{ref}}} (vars: {', '.join(variables) or 'none'})")
            return variables[ref]
        if ref in skipped:
            raise err(loc, f"${{stages.{ref}}} was skipped: {skipped[ref]}")
        if ref not in done:
            raise err(loc, f"${{stages.{ref}}} must name an earlier stage (earlier: {', '.join(done) or 'none'})")
        if ref not in upstream:
            upstream.append(ref)
        return str(done[ref].out)

    whole = _REF.fullmatch(v)
    if whole:
        return value(whole)
    out = _REF.sub(lambda m: str(value(m)), v)
    if "${" in out:
        raise err(loc, f"unknown reference in {v!r}: use ${{vars.NAME}} or ${{stages.NAME}}")
    return out


def _replace_strings(v: Any, tokens: dict[str, str]) -> Any:
    if isinstance(v, dict):
        return {k: _replace_strings(x, tokens) for k, x in v.items()}
    if isinstance(v, list):
        return [_replace_strings(x, tokens) for x in v]
    if isinstance(v, str):
        for path, token in tokens.items():
            v = v.replace(path, token)
    return v
