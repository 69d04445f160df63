"""What the labelling page shows: the pairs and critique traces of a cai dataset directory.

A pair is read from the tables the feedback and critique stages write, in canonical order (a, b):

- `prefs` of `cai label` / `cai rlaif`: a and b are the pair's response_a and response_b as judged
  (`chosen_is_a` undoes the chosen/rejected orientation), and the AI's soft label is
  p_a = p_chosen if chosen_is_a else 1 - p_chosen.
- `prefs` of `cai critique`: a = the final revision (chosen), b = the initial answer; the "AI label" is
  "the revision is better", with no probability.
- `pairs` of `cai sample` / `cai rlaif`: pairs the judge has not labelled (or never saw) are shown too,
  with no AI label; pairs with an empty or identical response are left out (nothing to compare).

Each pair has a content hash, stored with every human label, so a label given to other texts (the dataset
was regenerated under the same ids) is recognised as stale instead of silently applied.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cai.constitution import load_constitution
from cai.data.layout import read_config
from cai.data.sources import as_messages
from cai.errors import InputError
from cai.feedback.label import skip_reason


@dataclass(frozen=True)
class Pair:
    """One comparison in canonical order. `ai_choice` is "a", "b" or None (no AI label); `p_a` is the AI's
    probability that a is better (None when the AI label has no probability)."""

    id: str
    prompt: list[dict[str, str]]
    a: str
    b: str
    ai_choice: str | None = None
    p_a: float | None = None
    principle_ids: tuple[str, ...] = ()
    source: str = "pairs"
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def hash(self) -> str:
        """sha256 (16 hex) of prompt and both texts: what a human label was given to."""
        blob = json.dumps([self.prompt, self.a, self.b], ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def ai_p_chosen(self) -> float | None:
        """The AI's probability for its own choice (>= 0.5), as `p_chosen` in the prefs table."""
        if self.p_a is None or self.ai_choice is None:
            return None
        return self.p_a if self.ai_choice == "a" else 1.0 - self.p_a


def _content(value: Any) -> str:
    """The text of a response column: a string or a list of messages (the last assistant turn)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value:
        turns = [m for m in value if isinstance(m, dict) and m.get("role") == "assistant"] or value
        return str(turns[-1].get("content", ""))
    return ""


def _configs(data: Path) -> set[str]:
    return {p.parent.name for p in data.glob("*/train-*.parquet")}


PROVENANCE = ("prompt_id", "constitution", "constitution_hash", "model_id", "model_hash", "cai_version")


def _from_prefs(row: dict[str, Any]) -> Pair:
    extra = {k: row.get(k) for k in PROVENANCE}
    chosen, rejected = _content(row["chosen"]), _content(row["rejected"])
    principles = tuple(row.get("principle_ids") or ())
    if "chosen_is_a" in row and row.get("p_chosen") is not None:  # cai label / rlaif
        first = bool(row["chosen_is_a"])
        a, b = (chosen, rejected) if first else (rejected, chosen)
        p = float(row["p_chosen"])
        return Pair(str(row["id"]), as_messages(row["prompt"]), a, b, "a" if first else "b",
                    p if first else 1.0 - p, principles, "prefs", extra)
    p = row.get("p_chosen")  # cai critique (no p) or any chosen/rejected table (p optional)
    return Pair(str(row["id"]), as_messages(row["prompt"]), chosen, rejected, "a",
                None if p is None else float(p), principles, "prefs", extra)


def load_pairs(data: str | Path) -> list[Pair]:
    """Every comparable pair of dataset directory `data`, in dataset order, ids unique."""
    d = Path(data)
    if not d.is_dir():
        raise InputError("not a directory (expected a dataset written by cai rlaif, label, sample or critique)",
                         file=d, field="--data")
    have = _configs(d)
    if not have & {"prefs", "pairs"}:
        raise InputError(f"no `prefs` or `pairs` table to label (tables: {', '.join(sorted(have)) or 'none'})",
                         file=d, field="--data")
    out: dict[str, Pair] = {}
    if "prefs" in have:
        for i, row in enumerate(read_config(d, "prefs")):
            for col in ("id", "prompt", "chosen", "rejected"):
                if col not in row:
                    raise InputError(f"prefs row {i} lacks column {col!r}", file=d / "prefs", field=col)
            pair = _from_prefs(row)
            out.setdefault(pair.id, pair)
    if "pairs" in have:
        for row in read_config(d, "pairs"):
            pid = str(row.get("id"))
            if pid in out or skip_reason(row) is not None:
                continue
            out[pid] = Pair(pid, as_messages(row["prompt"]), row["response_a"], row["response_b"],
                            extra={k: row.get(k) for k in PROVENANCE})
    return list(out.values())


def display_order(annotator: str, pair_id: str) -> tuple[str, str]:
    """Which canonical response is shown left ("A" on the page) and right ("B") to this annotator:
    a coin flip seeded by annotator and pair, so it is random across pairs and annotators (no position
    bias carried into the labels) yet identical on every reload."""
    seed = int.from_bytes(hashlib.sha256(f"{annotator}\x00{pair_id}".encode()).digest()[:8], "big")
    return ("a", "b") if random.Random(seed).random() < 0.5 else ("b", "a")


def load_traces(data: str | Path) -> list[dict[str, Any]]:
    """Critique conversations of the `trace` table, grouped: [{id, prompt, init_response, status, error,
    rounds: [{round, principle_id, critique_request, critique, revision_request, revision}]}]."""
    d = Path(data)
    if "trace" not in _configs(d):
        return []
    convs: dict[str, dict[str, Any]] = {}
    for row in read_config(d, "trace"):
        c = convs.setdefault(str(row["id"]), {
            "id": str(row["id"]), "prompt": row.get("prompt"), "init_response": row.get("init_response"),
            "status": row.get("status"), "error": row.get("error"), "filtered_by": row.get("filtered_by"),
            "rounds": []})
        c["rounds"].append({k: row.get(k) for k in ("round", "principle_id", "critique_request", "critique",
                                                     "revision_request", "revision")})
    for c in convs.values():
        c["rounds"].sort(key=lambda r: r["round"] or 0)
    return list(convs.values())


def principle_texts(data: str | Path, constitution: str | None) -> dict[str, str]:
    """id -> text of the constitution's comparison and critique principles, shown after an answer.
    The constitution is the one named on the command line, else the one the dataset's rows name; when
    neither loads, the page shows principle ids only."""
    name = constitution
    if name is None:
        for cfg in ("prefs", "trace"):
            if cfg in _configs(Path(data)):
                rows = read_config(data, cfg)
                name = next((r.get("constitution") for r in rows if r.get("constitution")), None)
                if name:
                    break
    if not name:
        return {}
    try:
        c = load_constitution(name)
    except InputError:
        if constitution is not None:  # the user named it: a mistake is theirs to see
            raise
        return {}
    texts = {p.id: p.instruction for p in c.comparisons}
    texts.update({p.id: p.critique for p in c.critiques if p.id not in texts})
    return texts
