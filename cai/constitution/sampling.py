"""Deterministic, weighted principle sampling.

Each draw is an exponential race (Efraimidis-Spirakis): principle j gets `E_j / weight_j`, with
E_j ~ Exp(1) derived from sha256(seed, key, draw, id), and the smallest wins, so P(j) = w_j / sum(w).
Draws depend only on (seed, key) and the principles' ids and weights: not on call order, list
order, or principle texts. Adding or removing a principle changes only the draws it wins or won.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import TypeVar

P = TypeVar("P")


def _uniform(*parts: object) -> float:
    """A uniform number in (0, 1) from a hash of `parts`."""
    h = hashlib.sha256(":".join(map(str, parts)).encode("utf-8")).digest()
    return (int.from_bytes(h[:8], "big") + 0.5) / 2.0**64


class PrincipleSampler:
    """Sample principles with replacement, proportional to `weight`, reproducibly per (seed, key).

    The SL-CAI stage uses key `f"{prompt_id}:{round}"`; the labeller uses a key per comparison.
    """

    def __init__(self, principles: Sequence[P], seed: int = 0):
        if not principles:
            raise ValueError("PrincipleSampler needs at least one principle")
        ids = [p.id for p in principles]
        if len(set(ids)) != len(ids):
            raise ValueError("principle ids must be unique")
        self.principles = list(principles)
        self.seed = seed

    def sample(self, key: str, k: int = 1) -> list[P]:
        """`k` principles drawn independently (repeats allowed) for this key."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        return [min(self.principles, key=lambda p: -math.log(_uniform(self.seed, key, i, p.id)) / p.weight)
                for i in range(k)]

    def sample_ids(self, key: str, k: int = 1) -> list[str]:
        return [p.id for p in self.sample(key, k)]
