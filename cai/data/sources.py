"""Read prompt sets: JSONL, JSON, CSV, Parquet, a cai/Hub-layout dataset directory, or a hub dataset id.

Every row comes back as a dict with at least `id` and `prompt`. Mistakes (missing file or column,
invalid JSON on line N, empty file or empty prompt) raise `InputError` naming the file, line and column.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from cai.data.layout import read_config
from cai.errors import InputError
from cai.resources import shipped_dir

DEFAULT_PROMPTS = str(shipped_dir("data") / "red_team.jsonl")
"""The shipped red-team prompt set every prompt-reading stage defaults to."""

Prompt = str | list[dict]
"""A prompt is one user turn, or a conversation of `{role, content}` turns ending with the user."""


def read_rows(path: str | Path, *, config: str | None = None) -> list[tuple[int | None, dict[str, Any]]]:
    """Rows of a table file with their 1-based line numbers where the format has lines."""
    p = Path(path)
    if p.is_dir():
        return [(None, r) for r in _read_dataset_dir(p, config)]
    if not p.exists():
        if looks_like_hub_id(str(path)):
            return [(None, r) for r in _read_hub(str(path), config)]
        raise InputError("no such file or directory", file=p)
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


def looks_like_hub_id(name: str) -> bool:
    """`owner/name` with no file suffix, whose first part is not a local directory: `out/sampels` (a typo
    under an existing `out/`) is a missing local path, never a network request."""
    parts = name.split("/")
    return (len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~")) and not Path(name).suffix
            and not Path(parts[0]).exists())


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
    return read_config(p, config)


def _read_hub(name: str, config: str | None) -> list[dict[str, Any]]:
    try:
        import datasets
        ds = datasets.load_dataset(name, config, split="train")
    except Exception as e:
        raise InputError(f"no local file or directory of that name, and not loadable as a hub dataset "
                         f"({type(e).__name__})", file=name) from None
    return list(ds)


def load_prompts(path: str | Path, *, column: str = "prompt", id_column: str = "id",
                 config: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Prompt rows `{id, prompt, ...}`. A prompt may be a string or a list of chat messages."""
    rows = read_rows(path, config=config)
    if not rows:
        raise InputError("no prompts: the file is empty", file=path)
    if limit is not None and limit < 1:
        raise InputError(f"must be >= 1, got {limit}", field="--limit")
    out, seen, lines = [], set(), []
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
        out.append({**extra_columns(row, skip=(id_column, column)), "id": rid, "prompt": prompt})
        lines.append(line)
        if limit and len(out) >= limit:
            break
    check_column_types(out, lines, path)
    return out


# Column names cai writes in its output tables. An input column of the same name would silently replace
# cai's value in `{**cai_columns, **extra}`, so it is kept as `input_<name>` instead (README, "Safety of
# your data"). Provenance columns are here too: a prompt set made by cai carries its own.
RESERVED_COLUMNS = frozenset("""
    id prompt messages chosen rejected response responses response_a response_b sample sample_a sample_b
    prompt_id finish_reason completion_tokens tokens error skip p_chosen p_ab p_ba order_consistent chosen_is_a
    principle_id principle_ids principle_hash rationale rationale_ba mass_outside truncated judged_chosen
    judged_rejected round status filtered_by init_prompt init_response init_tokens init_finish_reason
    critic_prompt critic_response revision_prompt revision_response critique_request critique critique_tokens
    critique_finish_reason revision_request revision revision_tokens revision_finish_reason
    model_id model_hash engine dtype seed sampling cai_version role constitution constitution_hash
    constitution_version rounds""".split())
INPUT_PREFIX = "input_"


def extra_columns(row: dict[str, Any], skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The row's own columns, with every name cai uses for its output renamed `input_<name>`."""
    out: dict[str, Any] = {}
    for k, v in row.items():
        if k in skip:
            continue
        name = k
        while name in RESERVED_COLUMNS or (name != k and name in row):
            name = INPUT_PREFIX + name
        out[name] = v
    return out


def _kind(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, (list, tuple)):
        return "list"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def check_column_types(rows: list[dict[str, Any]], lines: list[int | None], path) -> None:
    """Each column holds one kind of value (nulls aside), or Parquet cannot store it: an int on one line and
    a string on another fails here, at load time, naming FILE:LINE:COL, instead of after the whole run."""
    first: dict[str, tuple[str, int | None]] = {}
    for row, line in zip(rows, lines):
        for k, v in row.items():
            kind = _kind(v)
            if kind is None:
                continue
            if k not in first:
                first[k] = (kind, line)
            elif first[k][0] != kind:
                seen, at = first[k]
                where = f" on line {at}" if at else " in an earlier row"
                raise InputError(f"column {k!r} holds a {kind} here but a {seen}{where}; one column, one type",
                                 file=path, line=line, col=_key_col(path, line, k), field=k)


def _key_col(path, line: int | None, key: str) -> int | None:
    """1-based column of `"key":` on a JSONL line (for the error message only)."""
    if line is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            for n, text in enumerate(f, 1):
                if n == line:
                    i = text.find(json.dumps(key.removeprefix(INPUT_PREFIX)) + ":")
                    return i + 1 if i >= 0 else None
    except (OSError, UnicodeDecodeError):
        return None
    return None


def as_messages(prompt: Prompt, system: str | None = None, role: str = "user") -> list[dict[str, str]]:
    """The `[{role, content}]` list of a prompt (a string becomes one `role` turn), with `system` prepended
    unless the conversation already opens with one. The one prompt -> messages helper of cai."""
    msgs = ([{"role": role, "content": prompt}] if isinstance(prompt, str)
            else [{"role": m["role"], "content": m["content"]} for m in prompt])
    if system and not (msgs and msgs[0]["role"] == "system"):
        msgs = [{"role": "system", "content": system}] + msgs
    return msgs


def last_user(prompt: Prompt) -> str:
    """The text of the last user turn of a prompt ('' when there is none)."""
    return next((m["content"] for m in reversed(as_messages(prompt)) if m["role"] == "user"), "")
