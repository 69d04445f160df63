"""Training data: read cai datasets, check their columns and tokenise them like TRL (batches: `batching`).

Datasets are directories in cai's layout (`DIR/<config>/<split>-*.parquet`, plus `manifest.json`), or a
plain .jsonl/.parquet file. Tokenisation follows TRL 1.16 so that numbers match it: the chat template is
applied to prompt + response, and the response starts where the tokenised prompt (with generation prompt)
and prompt + response diverge. Over-long sequences are truncated or dropped as TRL does, and counted.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from cai.data.sources import as_messages
from cai.errors import InputError
from cai.train.config import config_error

# Columns never treated as provenance in the model card (they are the training content).
CONTENT_COLUMNS = {"prompt", "messages", "chosen", "rejected", "p_chosen", "margin"}


@dataclass
class Rows:
    """Raw rows plus where they came from (`where[i]`: the file and 1-based line of row i, line None for
    Parquet)."""

    rows: list[dict]
    source: str
    manifest: dict | None = None
    where: list[tuple[str, int | None]] = field(default_factory=list)


@dataclass
class Counts:
    """What tokenisation did to the data; reported in metrics and the model card."""

    rows: int = 0
    truncated: int = 0
    dropped: int = 0
    no_response_tokens: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


# ---- reading -----------------------------------------------------------------------------------------


def read_split(path: str, config: str, split: str = "train", *, field_name: str = "data.path") -> Rows:
    """Rows of a dataset directory (`path/config/split-*.parquet`) or of a .jsonl/.parquet file."""
    if not path:
        raise InputError("no dataset given (set data.path)", field=field_name)
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError("dataset not found", file=p, field=field_name)
    manifest = None
    if p.is_dir():
        if (p / "manifest.json").is_file():
            try:
                manifest = json.loads((p / "manifest.json").read_text())
            except json.JSONDecodeError:
                manifest = None
        sub = p / config if (p / config).is_dir() else p
        files = sorted(sub.glob(f"{split}-*.parquet")) or sorted(sub.glob(f"{split}*.jsonl")) \
            or sorted(sub.glob("*.parquet")) or sorted(sub.glob("*.jsonl"))
        if not files:
            raise InputError(f"no {split!r} parquet or jsonl files for config {config!r}", file=p,
                             field=field_name)
    else:
        files = [p]
    rows: list[dict] = []
    where: list[tuple[str, int | None]] = []
    for f in files:
        for line, row in _read_file(f, field_name):
            rows.append(row)
            where.append((str(f), line))
    return Rows(rows, str(p), manifest, where)


def _read_file(f: Path, field_name: str) -> list[tuple[int | None, dict]]:
    if f.suffix == ".parquet":
        import pyarrow.parquet as pq
        try:
            return [(None, r) for r in pq.read_table(f).to_pylist()]
        except Exception as e:  # noqa: BLE001 - any unreadable parquet is a user input problem
            raise InputError(f"unreadable parquet ({type(e).__name__})", file=f, field=field_name) from None
    if f.suffix in (".jsonl", ".json"):
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            line = f.read_bytes()[:e.start].count(b"\n") + 1
            raise InputError(f"not valid UTF-8 (byte {e.start})", file=f, line=line, field=field_name) from None
        out = []
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise InputError(f"invalid JSON: {e.msg}", file=f, line=i, col=e.colno) from None
                if not isinstance(row, dict):
                    raise InputError(f"expected a JSON object, got {type(row).__name__}", file=f, line=i, col=1)
                out.append((i, row))
        return out
    raise InputError("expected a dataset directory, .jsonl or .parquet", file=f, field=field_name)


def check_columns(rows: Rows, needed: tuple[str, ...], field_name: str = "data.path") -> None:
    """Every row has the `needed` columns; `p_chosen` (when present) is a number in [0, 1] and `margin` a
    number. Errors name the file and line of the first bad row (rows are checked before any model loads)."""
    if not rows.rows:
        raise InputError("dataset is empty", file=rows.source, field=field_name)
    for i, row in enumerate(rows.rows):
        file, line = rows.where[i] if i < len(rows.where) else (rows.source, None)
        missing = [c for c in needed if c not in row]
        if missing:
            what = "dataset" if i == 0 else f"line {line}" if line else f"row {i}"
            raise InputError(f"{what} lacks column(s) {', '.join(missing)} (has: {', '.join(row)})",
                             file=file, line=line, field=missing[0])
        p = row.get("p_chosen")
        if p is not None and (isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0):
            raise InputError(f"must be a number in [0, 1], got {p!r}", file=file, line=line, field="p_chosen")
        m = row.get("margin")
        if m is not None and (isinstance(m, bool) or not isinstance(m, (int, float))):
            raise InputError(f"must be a number, got {m!r}", file=file, line=line, field="margin")


def split_eval(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Deterministic train/held-out index split."""
    idx = list(range(n))
    if fraction <= 0 or n < 2:
        return idx, []
    random.Random(seed).shuffle(idx)
    k = min(n - 1, max(1, round(n * fraction)))
    return sorted(idx[k:]), sorted(idx[:k])


def source_summary(rows: Rows, limit: int = 5) -> dict:
    """Distinct values of the non-content scalar columns (constitution_hash, model_id, ...) + manifest."""
    cols: dict[str, list] = {}
    for r in rows.rows:
        for k, v in r.items():
            if k in CONTENT_COLUMNS or isinstance(v, (list, dict)):
                continue
            vals = cols.setdefault(k, [])
            if v not in vals and len(vals) < limit:
                vals.append(v)
    cols = {k: v for k, v in cols.items() if not k.endswith("_id") or len(v) < limit or k == "model_id"}
    return {"source": rows.source, "rows": len(rows.rows), "columns": cols, "manifest": rows.manifest}


# ---- tokenisation (TRL 1.16 conventions) --------------------------------------------------------------


def chat_ids(tok, messages: list[dict], add_generation_prompt: bool = False) -> list[int]:
    out = tok.apply_chat_template(messages, tokenize=True, return_dict=True,
                                  add_generation_prompt=add_generation_prompt)
    return list(out["input_ids"])


def common_prefix_length(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


@dataclass
class SFTExample:
    input_ids: list[int]
    labels_mask: list[int]  # 1 where the token is an assistant token (trained on)


def tokenize_sft(tok, messages: list[dict], max_length: int, counts: Counts) -> SFTExample | None:
    """Chat-template the conversation; mark assistant tokens (content through the end-of-turn token).

    Each assistant turn i spans from the end of `template(messages[:i], add_generation_prompt=True)` to
    the end of `template(messages[:i+1])`, trimmed after the first EOS so the template's trailing newline
    is not trained. Truncation keeps the start (TRL's SFT default).
    """
    messages = as_messages(messages)
    ids = chat_ids(tok, messages)
    mask = [0] * len(ids)
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        start = common_prefix_length(chat_ids(tok, messages[:i], add_generation_prompt=True), ids)
        end = common_prefix_length(chat_ids(tok, messages[: i + 1]), ids)
        if tok.eos_token_id in ids[start:end]:
            end = ids.index(tok.eos_token_id, start) + 1
        for t in range(start, end):
            mask[t] = 1
    counts.rows += 1
    if len(ids) > max_length:
        counts.truncated += 1
        ids, mask = ids[:max_length], mask[:max_length]
    if sum(mask[1:]) == 0:  # nothing to learn from (the first token is never a target)
        counts.no_response_tokens += 1
        counts.dropped += 1
        return None
    return SFTExample(ids, mask)


@dataclass
class PrefExample:
    """One tokenised preference pair. `chosen_ids`/`rejected_ids` are the full prompt+response sequences;
    `*_mask` marks response tokens. `p_chosen` is the soft label (1.0 when absent)."""

    chosen_ids: list[int]
    chosen_mask: list[int]
    rejected_ids: list[int]
    rejected_mask: list[int]
    p_chosen: float = 1.0
    extra: dict = field(default_factory=dict)

    @property
    def length(self) -> int:
        return max(len(self.chosen_ids), len(self.rejected_ids))


def tokenize_pair_dpo(tok, row: dict, max_length: int, truncation_mode: str, counts: Counts) -> PrefExample | None:
    """TRL DPOTrainer tokenisation: prompt ids end where template(prompt, gen prompt) and
    template(prompt + response) diverge; the collator truncates each prompt+response to max_length
    (keep_start / keep_end); with keep_start, pairs whose prompt alone fills max_length are dropped."""
    prompt = as_messages(row["prompt"])
    p_ids = chat_ids(tok, prompt, add_generation_prompt=True)
    pc = chat_ids(tok, prompt + as_messages(row["chosen"], role="assistant"))
    pr = chat_ids(tok, prompt + as_messages(row["rejected"], role="assistant"))
    plen = min(common_prefix_length(p_ids, pc), common_prefix_length(p_ids, pr))
    counts.rows += 1
    if truncation_mode == "keep_start" and plen >= max_length:
        counts.dropped += 1
        return None
    cm = [0] * plen + [1] * (len(pc) - plen)
    rm = [0] * plen + [1] * (len(pr) - plen)
    if len(pc) > max_length or len(pr) > max_length:
        counts.truncated += 1
        sl = slice(None, max_length) if truncation_mode == "keep_start" else slice(-max_length, None)
        pc, cm, pr, rm = pc[sl], cm[sl], pr[sl], rm[sl]
    return PrefExample(pc, cm, pr, rm, _p_chosen(row))


def tokenize_pair_rm(tok, row: dict, max_length: int, counts: Counts) -> PrefExample | None:
    """TRL RewardTrainer tokenisation: template(prompt + response) for each side; pairs where either side
    is longer than max_length are dropped (TRL filters them rather than truncating)."""
    prompt = as_messages(row["prompt"])
    pc = chat_ids(tok, prompt + as_messages(row["chosen"], role="assistant"))
    pr = chat_ids(tok, prompt + as_messages(row["rejected"], role="assistant"))
    counts.rows += 1
    if len(pc) > max_length or len(pr) > max_length:
        counts.truncated += 1
        counts.dropped += 1
        return None
    return PrefExample(pc, [1] * len(pc), pr, [1] * len(pr), _p_chosen(row),
                       extra={"margin": float(row["margin"])} if row.get("margin") is not None else {})


def _p_chosen(row: dict) -> float:
    p = row.get("p_chosen")
    if p is None:
        return 1.0
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise InputError(f"p_chosen must be in [0, 1], got {p}", field="p_chosen")
    return p


def examples_hash(examples: list, extra: str = "") -> str:
    """sha256 of tokenised examples (ids, masks, labels): the dataset half of the reference-logps key."""
    h = hashlib.sha256(extra.encode())
    for e in examples:
        h.update(json.dumps([e.chosen_ids, e.chosen_mask, e.rejected_ids, e.rejected_mask]).encode())
    return h.hexdigest()


# ---- a stage's data, end to end ---------------------------------------------------------------------------


@dataclass
class Prepared:
    """Tokenised train and held-out examples of one stage, with counts and provenance."""

    train: list
    eval: list
    counts: Counts
    provenance: dict


def prepare(cfg, tok, needed: tuple[str, ...], tokenize) -> Prepared:
    """Read `cfg.data`, check `needed` columns, split off held-out rows and tokenise each row with
    `tokenize(row, counts) -> example | None` (None = dropped, already counted)."""
    d = cfg.data
    try:
        rows = read_split(d.path, d.config, d.split)
        check_columns(rows, needed)
        eval_rows = None
        if d.eval_path:
            eval_rows = read_split(d.eval_path, d.config, d.split, field_name="data.eval_path")
            check_columns(eval_rows, needed, "data.eval_path")
    except InputError as e:
        if e.file is None:  # nothing to point at in the data: point at the config field instead
            raise config_error(cfg, e.field or "data.path", e.message) from None
        raise
    data_rows = rows.rows[: d.limit] if d.limit else rows.rows
    if eval_rows is not None:
        train_rows, held = data_rows, eval_rows.rows
    else:
        tr, ev = split_eval(len(data_rows), d.eval_fraction, cfg.run.seed)
        train_rows, held = [data_rows[i] for i in tr], [data_rows[i] for i in ev]
    counts = Counts()
    train = [e for e in (tokenize(r, counts) for r in train_rows) if e is not None]
    held_counts = Counts()
    evals = [e for e in (tokenize(r, held_counts) for r in held) if e is not None]
    if not train:
        raise config_error(cfg, "data.max_length", "every training row was dropped (too long?)")
    return Prepared(train, evals, counts, source_summary(rows))
