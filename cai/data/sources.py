"""Read prompt sets: JSONL, JSON, CSV, Parquet, a cai/Hub-layout dataset directory, or a hub dataset id.

Every row comes back as a dict with at least `id` and `prompt`. Mistakes (missing file or column,
invalid JSON on line N, empty file or empty prompt) raise `InputError` naming the file, line and column.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from cai.errors import InputError


def read_rows(path: str | Path, *, config: str | None = None) -> list[tuple[int | None, dict[str, Any]]]:
    """Rows of a table file with their 1-based line numbers where the format has lines."""
    p = Path(path)
    if p.is_dir():
        return [(None, r) for r in _read_dataset_dir(p, config)]
    if not p.exists():
        if "/" in str(path) and not str(path).startswith((".", "/")) and not p.suffix:
            return [(None, r) for r in _read_hub(str(path), config)]
        raise InputError("file not found", file=p)
    suffix = p.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(p)
    if suffix == ".json":
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise InputError(f"invalid JSON: {e.msg}", file=p, line=e.lineno, col=e.colno) from None
        except UnicodeDecodeError:
            raise InputError("not valid UTF-8", file=p) from None
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise InputError("expected a JSON list of objects", file=p)
        return [(None, r) for r in data]
    if suffix in (".csv", ".tsv"):
        try:
            with open(p, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
                return [(i + 2, dict(r)) for i, r in enumerate(reader)]
        except UnicodeDecodeError:
            raise InputError("not valid UTF-8", file=p) from None
        except csv.Error as e:
            raise InputError(f"invalid CSV: {e}", file=p) from None
    if suffix == ".parquet":
        import pyarrow.parquet as pq
        try:
            return [(None, r) for r in pq.read_table(p).to_pylist()]
        except Exception as e:
            raise InputError(f"unreadable Parquet file: {e}", file=p) from None
    raise InputError(f"unsupported file type {suffix!r} (use .jsonl, .json, .csv or .parquet)", file=p)


def _read_jsonl(p: Path) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"not valid UTF-8 at byte {e.start}", file=p) from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"invalid JSON: {e.msg}", file=p, line=n, col=e.colno) from None
        if not isinstance(obj, dict):
            raise InputError(f"expected a JSON object, got {type(obj).__name__}", file=p, line=n, col=1)
        rows.append((n, obj))
    return rows


def _read_dataset_dir(p: Path, config: str | None) -> list[dict[str, Any]]:
    from cai.data.layout import read_config
    return read_config(p, config)


def _read_hub(name: str, config: str | None) -> list[dict[str, Any]]:
    try:
        import datasets
        ds = datasets.load_dataset(name, config, split="train")
    except Exception as e:
        raise InputError(f"could not load dataset {name!r}: {type(e).__name__}", file=name) from None
    return list(ds)


def load_prompts(path: str | Path, *, column: str = "prompt", id_column: str = "id",
                 config: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Prompt rows `{id, prompt, ...}`. A prompt may be a string or a list of chat messages."""
    rows = read_rows(path, config=config)
    if not rows:
        raise InputError("no prompts: the file is empty", file=path)
    out, seen = [], set()
    for i, (line, row) in enumerate(rows):
        if column not in row:
            have = ", ".join(sorted(row)) or "none"
            raise InputError(f"missing column {column!r} (columns: {have})", file=path, line=line, field=column)
        prompt = row[column]
        if isinstance(prompt, str):
            if not prompt.strip():
                raise InputError("empty prompt", file=path, line=line, field=column)
        elif isinstance(prompt, list) and prompt and all(isinstance(m, dict) and "role" in m and "content" in m
                                                          for m in prompt):
            pass
        else:
            raise InputError(f"expected a string or a list of {{role, content}} messages, got "
                             f"{type(prompt).__name__}", file=path, line=line, field=column)
        rid = str(row.get(id_column, i))
        if rid in seen:
            raise InputError(f"duplicate id {rid!r}", file=path, line=line, field=id_column)
        seen.add(rid)
        out.append({**row, "id": rid, "prompt": prompt})
        if limit and len(out) >= limit:
            break
    return out


def as_messages(prompt: str | list[dict[str, str]], system: str | None = None) -> list[dict[str, str]]:
    msgs = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
    if system and not (msgs and msgs[0]["role"] == "system"):
        msgs = [{"role": "system", "content": system}] + msgs
    return msgs
