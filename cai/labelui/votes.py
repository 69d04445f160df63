"""Human votes per pair: counting the store's current labels and reducing them to a label (pure functions).

A vote is "a", "b" or "tie" in canonical order; "skip" is no vote. Labels whose pair hash no longer matches
the dataset are stale (given to other texts) and are not counted.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from cai.labelui.pairs import Pair
from cai.labelui.store import Label


@dataclass
class Votes:
    """The non-skip votes on one pair: `by` maps annotator -> "a" | "b" | "tie"; `notes` their notes."""

    by: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def counts(self) -> Counter:
        return Counter(self.by.values())


def collect_votes(labels: list[Label], pairs: list[Pair]) -> tuple[dict[str, Votes], int]:
    """pair id -> Votes (pairs with at least one non-skip vote), and the number of stale labels ignored."""
    by_id = {p.id: p for p in pairs}
    votes: dict[str, Votes] = {}
    stale = 0
    for lab in labels:
        p = by_id.get(lab.pair_id)
        if p is None or p.hash != lab.pair_hash:
            stale += 1
            continue
        if lab.choice == "skip":
            continue
        v = votes.setdefault(lab.pair_id, Votes())
        v.by[lab.annotator] = lab.choice
        if lab.note:
            v.notes.append(f"{lab.annotator}: {lab.note}")
    return votes, stale


def human_p_a(counts: Counter) -> float | None:
    """Human vote rate for a, ties counted half: (n_a + n_tie / 2) / (n_a + n_b + n_tie); None with no votes.
    E.g. votes a, a, b -> 2/3; a, tie -> 3/4."""
    n = counts["a"] + counts["b"] + counts["tie"]
    return None if n == 0 else (counts["a"] + 0.5 * counts["tie"]) / n


def majority(counts: Counter) -> str | None:
    """The strict plurality of "a", "b", "tie"; None when there are no votes or the top count is shared.
    E.g. a, a, b -> "a"; a, b -> None; tie, tie, a -> "tie"."""
    ranked = sorted(((counts[k], k) for k in ("a", "b", "tie")), reverse=True)
    (n1, k1), (n2, _) = ranked[0], ranked[1]
    return k1 if n1 > 0 and n1 > n2 else None
