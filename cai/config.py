"""One config system for every stage: YAML files and dotted `key.sub=value` overrides -> config dataclasses.

    cfg = load_config(DPOConfig, "configs/dpo.yaml", ["optim.lr=1e-5"])
    cfg = from_data(CritiqueStage, mapping, file="run.yaml", marks=marks, prefix=("stages", "critique"))

A config is a dataclass (frozen or not) whose fields are documented where they are declared. Values are
coerced by the field's type: bool, int, float, str, Literal, `X | None`, `list[X]`, `tuple[X, ...]`,
fixed tuples `tuple[X, Y]`, `dict[str, X]` and nested dataclasses. Unknown keys, wrong types and the
`InputError(field=...)` (or `ValueError`) raised by a `__post_init__` become one line naming the YAML
file, line, column and dotted field. `to_dict` gives back plain YAML/JSON data, and `from_data` of that
data rebuilds an equal config (the pipeline sends stage configs to child processes this way).
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from cai.errors import InputError
from cai.yamlio import format_path, load_yaml, locate

_MISSING = object()


@dataclass
class Source:
    """Where a config came from, so that later checks (dataset columns, LoRA targets) can point at it."""

    file: str | None
    marks: dict
    overridden: set
    prefix: tuple = ()
    """Where the config's mapping sits in the file (a pipeline stage: `("stages", "sft")`)."""


def load_config(cls: type, path: str | Path | None = None, overrides: list[str] | tuple = ()) -> Any:
    """Build `cls` from a YAML file (optional) and `a.b=value` overrides (values parsed as YAML)."""
    data, marks = ({}, {}) if path is None else load_yaml(path)
    if data is None:
        data = {}
    file = str(path) if path is not None else None
    if not isinstance(data, dict):
        raise InputError("the config must be a mapping", file=file, line=1, col=1)
    overridden = apply_overrides(data, overrides)
    return from_data(cls, data, file=file, marks=marks, overridden=overridden)


def apply_overrides(data: dict, overrides: list[str] | tuple) -> set:
    """Set each `a.b.c=value` (value parsed as YAML) in the nested mapping `data`; return the key paths."""
    overridden: set = set()
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"override {item!r} must look like key.sub=value", field="overrides")
        keys = tuple(key.strip().split("."))
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise InputError(f"{k} is not a section", field=key)
        node[keys[-1]] = parse_value(raw)
        overridden.add(keys)
    return overridden


def from_data(cls: type, data: dict, *, file: str | None = None, marks: dict | None = None,
              overridden: set | None = None, prefix: tuple = ()) -> Any:
    """Build `cls` from a mapping. `prefix` is where the mapping sits in the file (for error locations)."""
    src = Source(file, marks or {}, overridden or set(), prefix)
    if not isinstance(data, dict):
        raise _locate_error(src, prefix, f"must be a mapping, got {type(data).__name__}")
    cfg = _build(cls, data, prefix, src)
    object.__setattr__(cfg, "_source", src)  # works for frozen dataclasses too
    return cfg


def config_error(cfg: Any, field_path: str, message: str) -> InputError:
    """An `InputError` about `field_path` (dotted) of a loaded config, located in its YAML when possible."""
    src = getattr(cfg, "_source", Source(None, {}, set()))
    return _locate_error(src, src.prefix + tuple(field_path.split(".")), message)


def field_default(cls: type, name: str) -> Any:
    """The default of field `name` of dataclass `cls` (for CLI help and flag defaults of a config that
    cannot be built without required inputs)."""
    f = next((f for f in dataclasses.fields(cls) if f.name == name), None)
    if f is None:
        raise KeyError(f"{cls.__name__} has no field {name!r}")
    return _default(f)


def core(cls: type, cfg: Any) -> Any:
    """The stage's own config (`cls`) out of a stage config that extends it with inputs, output and engine."""
    return cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls)})


def to_dict(cfg: Any) -> Any:
    """Plain data (dicts, lists, scalars) that `from_data(type(cfg), ...)` turns back into `cfg`."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, Path):
        return str(cfg)
    return cfg


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def parse_value(raw: str) -> Any:
    try:
        return yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        return raw


# ---- building ---------------------------------------------------------------------------------------------

def _locate_error(src: Source, path: tuple, message: str) -> InputError:
    fld = format_path(path)
    if path in src.overridden or any(path[:i] in src.overridden for i in range(1, len(path))):
        return InputError(f"{message} (from the command line)", field=fld)
    if src.file is None:
        return InputError(message, field=fld)
    line, col = locate(src.marks, path)
    return InputError(message, file=src.file, line=line, col=col, field=fld)


def _build(cls: type, data: dict, prefix: tuple, src: Source) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            near = ", ".join(sorted(fields))
            raise _locate_error(src, prefix + (key,), f"unknown key (expected one of: {near})")
        default = _default(fields[key])
        if isinstance(value, dict) and dataclasses.is_dataclass(default):
            # a partial mapping changes only the keys it names: `revision: {stop: [...]}` keeps the
            # field's own default budget and temperature, not those of a bare `SamplingParams()`
            value = _merged(to_dict(default), value)
        kwargs[key] = _coerce(hints[key], value, prefix + (key,), src)
    try:
        return cls(**kwargs)
    except InputError as e:
        if e.file is not None or e.field is None:
            raise
        raise _locate_error(src, prefix + tuple(e.field.split(".")), e.message) from None
    except (ValueError, TypeError) as e:  # a __post_init__ outside cai's error types (SamplingParams)
        raise _locate_error(src, prefix, str(e)) from None


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _merged(base: dict, given: dict) -> dict:
    out = dict(base)
    for k, v in given.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _coerce(tp: Any, value: Any, path: tuple, src: Source) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any or tp is object:
        return value
    if dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(value) and isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise _locate_error(src, path, f"must be a mapping, got {type(value).__name__}")
        return _build(tp, value, path, src)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for a in inner:  # the first member that accepts the value (str | list[str]: a list stays a list)
            try:
                return _coerce(a, value, path, src)
            except InputError as e:
                errors.append(e)
        # the error of the member the value is shaped like says most (a mapping: the dataclass member's)
        shaped = [e for a, e in zip(inner, errors) if dataclasses.is_dataclass(a) == isinstance(value, dict)]
        raise (shaped or errors)[0]
    if origin is Literal:
        if value not in args:
            raise _locate_error(src, path, f"must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise _locate_error(src, path, f"must be a list, got {type(value).__name__}")
        return [_coerce(args[0] if args else Any, v, path + (i,), src) for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _locate_error(src, path, f"must be a list, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, path + (i,), src) for i, v in enumerate(value))
        if args and len(value) != len(args):
            raise _locate_error(src, path, f"must be a list of {len(args)} values, got {len(value)}")
        return tuple(_coerce(a, v, path + (i,), src) for i, (a, v) in enumerate(zip(args or [Any] * len(value),
                                                                                      value)))
    if origin is dict:
        if not isinstance(value, dict):
            raise _locate_error(src, path, f"must be a mapping, got {type(value).__name__}")
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(vt, v, path + (k,), src) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise _locate_error(src, path, f"must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _locate_error(src, path, f"must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads `1e-5` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _locate_error(src, path, f"must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise _locate_error(src, path, f"must be a string, got {value!r}")
        return str(value)
    return value
