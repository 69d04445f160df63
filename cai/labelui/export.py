"""`cai labels export`: merge human labels (SQLite) with the AI's labels into a preference dataset.

The output is the `prefs` layout every trainer reads (`OUT/prefs/train-*.parquet`, card, manifest):
TRL conversational `prompt`, `chosen`, `rejected`, the soft label `p_chosen` that drives training, and
both sources side by side in every row (`human_p_chosen`, `ai_p_chosen`, oriented to this row's
`chosen`; `human_votes`; `label_source`), so an export made under one policy can be re-read under another.

Policies (which source decides `chosen`/`rejected`/`p_chosen`), chosen in one place (`POLICIES`):
- `human-overrides` (default): the human vote rate where any annotator voted, else the AI label. A pair
  the humans split evenly (or called a tie) is left out: the humans overrode the AI with "no preference".
- `both`: the mean of the human vote rate and the AI's probability where both exist, else the one that does.
- `human`: only human-labelled pairs. `ai`: only the AI labels (the humans are ignored: a baseline).
The human vote rate of a is (n_a + n_tie / 2) / n_votes (`cai.labelui.votes.human_p_a`).
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cai.data.layout import write_dataset
from cai.data.store import RunDir
from cai.errors import InputError
from cai.labelui.pairs import Pair, load_pairs
from cai.labelui.store import default_db, read_labels
from cai.labelui.votes import Votes, collect_votes, human_p_a


def _ai_p_a(pair: Pair) -> float | None:
    """The AI's probability that a is better; a hard AI label (critique: revision preferred) counts as 1/0."""
    if pair.ai_choice is None:
        return None
    if pair.p_a is not None:
        return pair.p_a
    return 1.0 if pair.ai_choice == "a" else 0.0


def _human_overrides(h: float | None, ai: float | None) -> tuple[float, str] | None:
    if h is not None:
        return (h, "human") if h != 0.5 else None
    return None if ai is None else (ai, "ai")


def _both(h: float | None, ai: float | None) -> tuple[float, str] | None:
    if h is not None and ai is not None:
        return (h + ai) / 2, "both"
    if h is not None:
        return h, "human"
    return None if ai is None else (ai, "ai")


def _human(h: float | None, ai: float | None) -> tuple[float, str] | None:
    return None if h is None or h == 0.5 else (h, "human")


def _ai(h: float | None, ai: float | None) -> tuple[float, str] | None:
    return None if ai is None else (ai, "ai")


# policy -> f(human p_a | None, AI p_a | None) -> (p_a that decides the row, source) | None (row left out)
POLICIES = {"human-overrides": _human_overrides, "both": _both, "human": _human, "ai": _ai}
DEFAULT_POLICY = "human-overrides"


@dataclass
class ExportConfig:
    """Settings of `cai labels export` (pipeline stage kind `labels.export`)."""

    data: str = ""
    """Dataset directory that was labelled (written by cai rlaif, label, sample or critique)."""
    out: str = ""
    """Output dataset directory (the `prefs` layout; `datasets.load_dataset(out, "prefs")`)."""
    db: str = ""
    """SQLite file of human labels; empty means DATA/human_labels.sqlite (what `cai label-ui` uses)."""
    policy: str = DEFAULT_POLICY
    """How human and AI labels merge: human-overrides (default), both, human, ai (see the module docstring)."""
    overwrite: bool = False
    """Replace an output directory that holds a different export."""

    def __post_init__(self):
        if not self.data:
            raise InputError("required", field="data")
        if not self.out:
            raise InputError("required", field="out")
        if self.policy not in POLICIES:
            raise InputError(f"unknown policy {self.policy!r} (choose from {', '.join(POLICIES)})", field="policy")
        if Path(self.out).resolve() == Path(self.data).resolve():
            raise InputError("the export must not replace the labelled dataset; choose another directory",
                             field="out")
        if not self.db:
            self.db = str(default_db(self.data))


def _orient(p_a: float | None, a_chosen: bool) -> float | None:
    """A probability that a is better, as the probability that the row's `chosen` is better."""
    return None if p_a is None else (p_a if a_chosen else 1.0 - p_a)


def merge(pairs: list[Pair], votes: dict[str, Votes], policy: str) -> tuple[list[dict[str, Any]], Counter]:
    """Export rows (in dataset order) and counts of where each row's label came from / why it was left out."""
    decide = POLICIES[policy]
    rows, counts = [], Counter()
    for pair in pairs:
        v = votes.get(pair.id)
        h, ai = (human_p_a(v.counts) if v else None), _ai_p_a(pair)
        got = decide(h, ai)
        if got is None:
            counts["left_out_" + ("human_tie" if h == 0.5 else "no_label")] += 1
            continue
        p_a, source = got
        # exactly 0.5 from the AI: keep the judge's own orientation (its hard label follows the soft one)
        a_chosen = p_a > 0.5 or (p_a == 0.5 and pair.ai_choice == "a")
        chosen, rejected = (pair.a, pair.b) if a_chosen else (pair.b, pair.a)
        counts[source] += 1
        rows.append({"id": pair.id, "prompt": pair.prompt,
                     "chosen": [{"role": "assistant", "content": chosen}],
                     "rejected": [{"role": "assistant", "content": rejected}],
                     "p_chosen": _orient(p_a, a_chosen), "label_source": source,
                     "human_p_chosen": _orient(h, a_chosen), "ai_p_chosen": _orient(ai, a_chosen),
                     "human_votes": len(v.by) if v else 0,
                     "human_annotators": sorted(v.by) if v else [], "human_notes": list(v.notes) if v else [],
                     "principle_ids": list(pair.principle_ids), "pair_source": pair.source, **pair.extra})
    return rows, counts


CARD = """Preference pairs merging human labels (`{db}`) with the AI labels of `{data}`, policy `{policy}`.

Columns: `prompt`, `chosen`, `rejected` (TRL conversational format); `p_chosen` (the training label, from
`label_source`: human, ai or both); `human_p_chosen` (human vote rate for `chosen`, ties counted half;
null without human votes), `ai_p_chosen` (the AI's probability for `chosen`; 1.0 for a hard AI label such
as a critique revision); `human_votes`, `human_annotators`, `human_notes`; `principle_ids` (the AI's).

Train with `cai train rm|dpo --config ... data.path=OUT`.
"""


def export_labels(cfg: ExportConfig) -> dict[str, Any]:
    """Write the merged `prefs` dataset under `cfg.out`; returns the manifest (counts per source)."""

    t0 = time.perf_counter()
    pairs = load_pairs(cfg.data)
    if not Path(cfg.db).is_file() and cfg.policy in ("human", "both"):
        raise InputError("no human labels: the label store does not exist", file=cfg.db, field="db")
    labels = read_labels(cfg.db)
    votes, stale = collect_votes(labels, pairs)
    rows, counts = merge(pairs, votes, cfg.policy)
    if not rows:
        raise InputError(f"no pair has a label under policy {cfg.policy!r} ({dict(counts)})", file=cfg.data,
                         field="policy")
    RunDir(cfg.out, {"stage": "labels.export", **asdict(cfg)}, overwrite=cfg.overwrite)
    manifest = {"stage": "labels.export", "config": asdict(cfg), "pairs": len(pairs), "rows": len(rows),
                "sources": dict(counts), "labels": len(labels), "stale_labels": stale,
                "annotators": sorted({lab.annotator for lab in labels}),
                "human_labelled_pairs": len(votes), "seconds": round(time.perf_counter() - t0, 3)}
    write_dataset(cfg.out, {"prefs": rows}, manifest, title="cai labels export: human + AI preferences",
                  body=CARD.format(db=cfg.db, data=cfg.data, policy=cfg.policy))
    return {**manifest, "out": cfg.out}
