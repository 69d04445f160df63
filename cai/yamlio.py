"""Strict YAML loading that remembers where every value came from.

`load_yaml(path)` returns `(data, marks)` where `marks[("critiques", 3, "id")] == (line, col)` (1-based),
so validation errors anywhere in cai can name FILE:LINE:COL and the field path.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cai.errors import InputError

MAX_BYTES = 2 * 1024 * 1024  # a constitution or config larger than this is a mistake, not a file to parse

Marks = dict[tuple, tuple[int, int]]


class _UniqueKeyLoader(yaml.SafeLoader):
    pass


def _construct(node: yaml.Node, path: tuple, marks: Marks, file: str) -> Any:
    marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        _UniqueKeyLoader.flatten_mapping(_UniqueKeyLoader, node)  # merge keys (<<)
        out: dict = {}
        for knode, vnode in node.value:
            key = _UniqueKeyLoader.construct_object(_UniqueKeyLoader(""), knode)  # scalars only
            if not isinstance(key, (str, int, float, bool)) or key is None:
                raise InputError("mapping keys must be scalars", file=file, line=knode.start_mark.line + 1,
                                 col=knode.start_mark.column + 1, field=_fmt(path))
            if key in out:
                raise InputError(f"duplicate key {key!r}", file=file, line=knode.start_mark.line + 1,
                                 col=knode.start_mark.column + 1, field=_fmt(path + (key,)))
            out[key] = _construct(vnode, path + (key,), marks, file)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(v, path + (i,), marks, file) for i, v in enumerate(node.value)]
    return _scalar(node)


def _scalar(node: yaml.ScalarNode) -> Any:
    loader = _UniqueKeyLoader("")
    return loader.construct_object(node, deep=True)


def _fmt(path: tuple) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<root>"


format_path = _fmt


def read_text(path: str | Path, max_bytes: int = MAX_BYTES) -> str:
    """Read a user file as UTF-8, with one-line errors for missing, oversized or non-UTF-8 files."""
    p = Path(path)
    if not p.is_file():
        raise InputError("file not found", file=p)
    size = p.stat().st_size
    if size > max_bytes:
        raise InputError(f"file is too large ({size} bytes > {max_bytes})", file=p)
    raw = p.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise InputError(f"not valid UTF-8 (byte 0x{raw[e.start]:02x})", file=p, line=line, col=col) from None


def load_yaml_text(text: str, file: str | Path) -> tuple[Any, Marks]:
    marks: Marks = {}
    try:
        node = yaml.compose(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as e:
        m = e.problem_mark or e.context_mark
        raise InputError(f"YAML syntax: {e.problem or e.context}", file=file,
                         line=m.line + 1 if m else None, col=m.column + 1 if m else None) from None
    except yaml.YAMLError as e:
        raise InputError(f"YAML syntax: {e}", file=file) from None
    if node is None:
        return None, marks
    try:
        return _construct(node, (), marks, str(file)), marks
    except yaml.constructor.ConstructorError as e:
        m = e.problem_mark
        raise InputError(f"YAML: {e.problem}", file=file, line=m.line + 1 if m else None,
                         col=m.column + 1 if m else None) from None


def load_yaml(path: str | Path) -> tuple[Any, Marks]:
    return load_yaml_text(read_text(path), path)


def locate(marks: Marks, path: tuple) -> tuple[int | None, int | None]:
    """Line/col of `path`, or of its nearest ancestor that exists in the file."""
    path = tuple(path)
    while path:
        if path in marks:
            return marks[path]
        path = path[:-1]
    return marks.get((), (None, None))


def display(p: Path) -> str:
    """`p` relative to the working directory when it is below it (shorter error messages), else as given."""
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)
