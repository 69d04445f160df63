"""Load a constitution: find it by name or path, validate it, and resolve `extends` and `remove`.

Every mistake becomes one `InputError` naming FILE:LINE:COL and the field path, using the marks that
`cai.yamlio` records. Merging is by principle id: a child's principle replaces the inherited one with
the same id in place, new ids are appended, and `remove: [ids]` drops inherited ones.
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from cai.constitution.checks import CHECK_MODELS, GRADER_NAMES, declared_checks
from cai.constitution.schema import (
    TEMPLATE_NAMES,
    ComparisonExample,
    ComparisonPrinciple,
    Constitution,
    ConstitutionFile,
    CritiquePrinciple,
    FewShot,
    Message,
    Scoring,
    Templates,
    read_templates,
)
from cai.constitution.templates import check_templates
from cai.errors import InputError
from cai.resources import shipped_dir
from cai.yamlio import Marks, display, format_path, load_yaml, locate, read_text

_KNOWN_KEYS = sorted({k for m in (ConstitutionFile, CritiquePrinciple, ComparisonPrinciple, FewShot,
                                  ComparisonExample, Message, Scoring, Templates, *CHECK_MODELS)
                      for k in m.model_fields})


_ID_HINT = "an id starts with a letter or digit and contains only letters, digits, '_', '.' and '-'"
_TEMPLATE_HINT = "a template override is the path of a .j2 file, relative to this constitution"
_FUNCTION_HINT = "a python check names its grader as module:function, e.g. my_graders:answers_first"
_PATTERN_HINTS = {"id": _ID_HINT, "principle": _ID_HINT, "name": _ID_HINT, "function": _FUNCTION_HINT,
                  **{n: _TEMPLATE_HINT for n in TEMPLATE_NAMES}}


def constitutions_dir() -> Path:
    """The shipped constitutions: `$CAI_CONSTITUTIONS_DIR`, else `constitutions/` next to the package."""
    env = os.environ.get("CAI_CONSTITUTIONS_DIR")
    return Path(env) if env else shipped_dir("constitutions")


def available() -> list[str]:
    d = constitutions_dir()
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def _is_path(ref: str) -> bool:
    return "/" in ref or os.sep in ref or ref.endswith((".yaml", ".yml"))


def resolve_ref(ref: str | Path, base_dir: Path | None = None) -> Path:
    """A name means `constitutions/NAME.yaml`; anything path-like is relative to `base_dir` (or cwd)."""
    if isinstance(ref, Path) or _is_path(ref):
        p = Path(ref)
        return p if p.is_absolute() or base_dir is None else base_dir / p
    return constitutions_dir() / f"{ref}.yaml"


def load_constitution(ref: str | Path) -> Constitution:
    """Load, validate and resolve a constitution given by name (e.g. "harmless") or path."""
    path = resolve_ref(ref)
    if not path.is_file():
        if isinstance(ref, str) and not _is_path(ref):
            raise InputError(f"no constitution named {ref!r} (available: {', '.join(available()) or 'none'}; "
                             f"looked in {constitutions_dir()})")
        raise InputError("file not found", file=ref)
    c = _load(path, stack=())
    c = c.model_copy(update={"template_sources": read_templates(c)})
    check_templates(c)
    return c


def _load(path: Path, stack: tuple[Path, ...]) -> Constitution:
    file = display(path)
    data, marks = load_yaml(path)
    if not isinstance(data, dict):
        line, col = locate(marks, ())
        raise InputError("a constitution must be a YAML mapping with name, version and principles",
                         file=file, line=line, col=col)
    try:
        f = ConstitutionFile.model_validate(data)
    except ValidationError as e:
        raise validation_error(e, data, {**marks, **_key_marks(path)}, file) from None

    def err(msg: str, loc: tuple) -> InputError:
        line, col = locate(marks, loc)
        return InputError(msg, file=file, line=line, col=col, field=format_path(loc) if loc else None)

    for key in ("critiques", "comparisons"):
        seen: dict[str, int] = {}
        for i, p in enumerate(getattr(f, key)):
            if p.id in seen:
                first = locate(marks, (key, seen[p.id], "id"))[0]
                raise err(f"duplicate id {p.id!r} (first used at line {first})", (key, i, "id"))
            seen[p.id] = i
            p._source = (file, *locate(marks, (key, i)))

    check_locs = [("checks", i) for i in range(len(f.checks))] + [
        (key, i, "checks", j) for key in ("critiques", "comparisons") for i, p in enumerate(getattr(f, key))
        for j in range(len(p.checks))]
    seen_checks: dict[str, tuple] = {}
    for loc in sorted(check_locs, key=lambda loc: locate(marks, loc)[0] or 0):
        k = _at_path(f, loc)
        if k.id in seen_checks:
            first = locate(marks, seen_checks[k.id] + ("id",))[0]
            raise err(f"duplicate check id {k.id!r} (first used at line {first})", loc + ("id",))
        seen_checks[k.id] = loc
        k._source, k._path = (file, *locate(marks, loc)), format_path(loc)

    for kind in ("critique", "comparison"):
        for i in range(len(getattr(f.few_shot, kind))):
            f.few_shot._sources[(kind, i)] = (file, *locate(marks, ("few_shot", kind, i)))

    templates = f.templates
    overrides = {}
    for name in TEMPLATE_NAMES:
        rel = getattr(templates, name)
        if rel is not None:
            tp = (path.parent / rel).resolve()
            if not tp.is_file():
                raise err(f"template file not found: {tp}", ("templates", name))
            overrides[name] = str(tp)
    templates = templates.model_copy(update=overrides)

    own = {"critiques": f.critiques, "comparisons": f.comparisons}
    parents: list[str] = []
    if f.extends is None:
        if f.remove:
            raise err("`remove` needs `extends`: there is nothing inherited to remove", ("remove",))
        crit, comp, checks = list(f.critiques), list(f.comparisons), list(f.checks)
        few_shot, system_prompt, scoring, contrast = f.few_shot, f.system_prompt, f.scoring, f.contrast
    else:
        ppath = resolve_ref(f.extends, path.parent)
        if not ppath.is_file():
            hint = (f"available: {', '.join(available()) or 'none'}" if not _is_path(f.extends)
                    else f"no file {ppath}")
            raise err(f"extends {f.extends!r}, which does not exist ({hint})", ("extends",))
        chain = stack + (path.resolve(),)
        if ppath.resolve() in chain:
            names = " -> ".join(display(p) for p in chain[chain.index(ppath.resolve()):] + (ppath.resolve(),))
            raise err(f"extends cycle: {names}", ("extends",))
        parent = _load(ppath, chain)
        parents = [parent.name, *parent.parents]
        inherited = {"critiques": list(parent.critiques), "comparisons": list(parent.comparisons),
                     "checks": list(parent.checks)}
        own["checks"] = f.checks
        for i, rid in enumerate(f.remove):
            if not any(p.id == rid for lst in inherited.values() for p in lst):
                raise err(f"no inherited principle or check has id {rid!r}", ("remove", i))
            if any(p.id == rid for lst in own.values() for p in lst):
                raise err(f"id {rid!r} is both removed and redefined; redefining alone replaces it", ("remove", i))
            inherited = {key: [p for p in lst if p.id != rid] for key, lst in inherited.items()}
        merged = {}
        for key, lst in inherited.items():
            index = {p.id: j for j, p in enumerate(lst)}
            for p in own[key]:
                if p.id in index:
                    lst[index[p.id]] = p
                else:
                    index[p.id] = len(lst)
                    lst.append(p)
            merged[key] = lst
        crit, comp, checks = merged["critiques"], merged["comparisons"], merged["checks"]
        fs_set = f.few_shot.model_fields_set
        origin = {k: f.few_shot if k in fs_set else parent.few_shot for k in ("critique", "comparison")}
        few_shot = FewShot(critique=origin["critique"].critique, comparison=origin["comparison"].comparison)
        few_shot._sources = {key: src for k, o in origin.items() for key, src in o._sources.items() if key[0] == k}
        system_prompt = f.system_prompt if "system_prompt" in f.model_fields_set else parent.system_prompt
        scoring = f.scoring if "scoring" in f.model_fields_set else parent.scoring
        contrast = f.contrast if "contrast" in f.model_fields_set else parent.contrast
        set_here = templates.model_fields_set | set(overrides)
        templates = parent.templates.model_copy(update={k: getattr(templates, k) for k in set_here})

    if not crit and not comp:
        raise err("the constitution has no critiques and no comparisons", ())
    ids = {p.id for p in comp}
    for i, ex in enumerate(few_shot.comparison):
        if ex.principle is not None and ex.principle not in ids:
            src_file, line, col = few_shot._sources.get(("comparison", i), (file, None, None))
            if src_file == file:
                line, col = locate(marks, ("few_shot", "comparison", i, "principle"))
            raise InputError(f"no comparison principle has id {ex.principle!r}"
                             + ("" if src_file == file else f" (it was removed in {file})"),
                             file=src_file, line=line, col=col, field=f"few_shot.comparison[{i}].principle")

    c = Constitution(name=f.name, version=f.version, description=f.description, critiques=crit,
                     comparisons=comp, few_shot=few_shot, system_prompt=system_prompt, scoring=scoring,
                     contrast=contrast, checks=checks, templates=templates, source_path=path, parents=parents)
    seen: dict[str, Any] = {}
    for _, k in declared_checks(c):  # ids unique across files too (a principle's check vs an inherited one)
        if k.id in seen:
            src, line, col = k._source or (file, None, None)
            raise InputError(f"duplicate check id {k.id!r} (also declared at {':'.join(map(str, seen[k.id]))})",
                             file=src, line=line, col=col, field=k._path or "checks")
        seen[k.id] = tuple(x for x in (k._source or ()) if x is not None)
    return c


def _at_path(obj: Any, loc: tuple) -> Any:
    for part in loc:
        obj = obj[part] if isinstance(part, int) else getattr(obj, part)
    return obj


def _key_marks(path: Path) -> Marks:
    """(line, col) of each mapping *key* whose value is a collection, keyed by the value's path.

    `yamlio` marks where a value starts; for `critques:` followed by a block list that is the next
    line, while the mistake is the key. Computed only when reporting an error.
    """
    node = yaml.compose(read_text(path), Loader=yaml.SafeLoader)
    out: Marks = {}

    def walk(n, p):
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                key = k.value if isinstance(k, yaml.ScalarNode) else None
                if not isinstance(v, yaml.ScalarNode):
                    out[p + (key,)] = (k.start_mark.line + 1, k.start_mark.column + 1)
                walk(v, p + (key,))
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                walk(v, p + (i,))

    walk(node, ())
    return out


def _data_loc(loc: tuple, data: Any) -> tuple:
    """Drop the parts of a pydantic error location that name union members, not data keys."""
    out: list = []
    cur = data
    for i, part in enumerate(loc):
        if isinstance(cur, dict):
            if part not in cur and (i < len(loc) - 1 or cur.get("grader") == part):
                continue  # a union member's name (the `grader` of a check), not a key
            out.append(part)
            if part not in cur:
                break  # a missing field: its name is the last part
            cur = cur[part]
        elif isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
            out.append(part)
            cur = cur[part]
        elif isinstance(cur, list):
            continue  # e.g. 'list[Message]'
        else:
            break  # a scalar: the rest are type names
    return tuple(out)


def validation_error(e: ValidationError, data: Any, marks: Marks, file: str) -> InputError:
    """The first error in file order, as a one-line `InputError`."""
    errors = []
    for er in e.errors(include_url=False):
        loc = _data_loc(er["loc"], data)
        line, col = locate(marks, loc)
        errors.append(((line or 0, col or 0), loc, er))
    (line, col), loc, er = min(errors, key=lambda t: t[0])
    if er["type"] == "missing":  # a misspelt key explains a missing one next to it: name the typo
        (line, col), loc, er = next((t for t in errors if t[2]["type"] == "extra_forbidden" and t[1][:-1] == loc[:-1]),
                                    ((line, col), loc, er))
    kind = er["type"]
    if kind == "extra_forbidden":
        near = difflib.get_close_matches(str(loc[-1]), _KNOWN_KEYS, n=1)
        msg = f"unknown key {loc[-1]!r}" + (f" (did you mean {near[0]!r}?)" if near else "")
    elif kind == "missing":
        msg = "missing required field"
    elif kind in ("union_tag_invalid", "union_tag_not_found"):
        tag = er.get("ctx", {}).get("tag")
        msg = (f"unknown grader {tag!r}" if kind == "union_tag_invalid" else "missing `grader`") + \
            f" (choose one of: {', '.join(GRADER_NAMES)})"
        loc = loc + ("grader",) if kind == "union_tag_invalid" else loc
        line, col = locate(marks, loc)
    elif kind == "string_pattern_mismatch" and loc and loc[-1] in _PATTERN_HINTS:
        msg = f"{_PATTERN_HINTS[loc[-1]]}, got {er['input']!r}"
    else:
        msg = er["msg"].removeprefix("Value error, ")
        if kind.endswith("_type") or kind == "literal_error":
            msg += f", got {type(er['input']).__name__} {er['input']!r}"[:200]
    return InputError(msg, file=file, line=line or None, col=col or None, field=format_path(loc))
