"""The label math of RL-CAI feedback, as pure functions of next-token log-probs.

Everything an engine returns is turned into a preference (or a d-RLAIF reward) here, and nowhere else:
option-token normalisation (Bai et al. 2022 §4.1), position debiasing by averaging both orders (Lee et
al. 2023 §2.2), the CoT clamp to [0.4, 0.6] (Bai et al. 2022 §4.2), and the probability-weighted mean
score of d-RLAIF (Lee et al. 2023 §3.2). The functions take plain dicts and floats, so the tests check
them against numbers computed by hand.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# --- option tokens -------------------------------------------------------------------------------

def option_variants(decoded: Sequence[str], letter: str) -> list[int]:
    """Ids of every vocabulary token that spells `letter` as an answer: `A`, ` A`, `(A`, ` (A`.

    `decoded[i]` is the text of token i alone. Stripping spaces and one leading "(" leaves the letter;
    the answer prefix usually ends in "(", but a judge may still emit " A" or "(A", and all of these
    mean the same choice, so their probabilities are summed.
    """
    return [i for i, s in enumerate(decoded) if s.strip().removeprefix("(").strip() == letter]


@dataclass(frozen=True)
class OptionProbs:
    """The next-token distribution read as a two-way choice."""

    p_first: float
    """p(A) / (p(A) + p(B)): the normalised probability that the first option is better."""
    mass_first: float
    """Raw probability of all variants of the first letter."""
    mass_second: float
    """Raw probability of all variants of the second letter."""
    floored: bool = False
    """True when a letter was absent from the top-k and its mass was bounded by the k-th log-prob."""

    @property
    def mass_outside(self) -> float:
        """Probability the judge put on tokens that are neither option (1 − p(A) − p(B))."""
        return max(0.0, 1.0 - self.mass_first - self.mass_second)


def option_probs(logprobs: Mapping[int, float], first_ids: Sequence[int], second_ids: Sequence[int],
                 extra: Mapping[int, float] | None = None) -> OptionProbs:
    """Normalise the next-token probabilities over the two options.

    logprobs: top-k next-token log-probs {token_id: logprob} (raw model distribution).
    first_ids / second_ids: every token id spelling the first / second letter (`option_variants`).
    extra: log-probs scored exactly for tokens outside the top-k (`score_continuations`), used as is.

    p_first = Σ_{t∈A} e^{lp_t} / (Σ_{t∈A} e^{lp_t} + Σ_{t∈B} e^{lp_t}).
    A letter with no variant in `logprobs` or `extra` is bounded by the smallest top-k log-prob (no
    token outside the top-k can be more likely than the k-th): a conservative estimate, flagged
    `floored`. If neither letter is seen at all, p_first is 0.5.
    """
    lp = dict(logprobs)
    for t, v in (extra or {}).items():
        lp.setdefault(t, v)
    masses, floored = [], False
    for ids in (first_ids, second_ids):
        seen = [math.exp(lp[t]) for t in ids if t in lp]
        if not seen and logprobs:
            seen, floored = [math.exp(min(logprobs.values()))], True
        masses.append(sum(seen))
    a, b = masses
    p = a / (a + b) if a + b > 0 else 0.5
    return OptionProbs(p_first=p, mass_first=a, mass_second=b, floored=floored)


# --- both orders, clamping -----------------------------------------------------------------------

@dataclass(frozen=True)
class Preference:
    """A debiased preference between response 1 and response 2 of a pair."""

    p_ab: float
    """p(first option better) with response 1 shown as (A)."""
    p_ba: float
    """p(first option better) with response 2 shown as (A) (swapped order)."""

    @property
    def p1(self) -> float:
        """p(response 1 better) = mean(p_ab, 1 − p_ba)  (Lee et al. 2023, position-bias mitigation)."""
        return 0.5 * (self.p_ab + (1.0 - self.p_ba))

    @property
    def order_consistent(self) -> bool:
        """Both orders prefer the same response (a tie at exactly 0.5 counts as preferring response 2)."""
        return (self.p_ab > 0.5) == (1.0 - self.p_ba > 0.5)

    @property
    def first_chosen(self) -> bool:
        return self.p1 >= 0.5

    @property
    def p_chosen(self) -> float:
        """Probability that the chosen response is the better one (≥ 0.5 by construction)."""
        return max(self.p1, 1.0 - self.p1)


def clamp(p: float, lo: float = 0.4, hi: float = 0.6) -> float:
    """CoT probabilities are near 0/1; Bai et al. (2022 §4.2) clamp them to [0.4, 0.6]."""
    return min(max(p, lo), hi)


def mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


# --- d-RLAIF: expected score ---------------------------------------------------------------------

def score_distribution(seq_probs: Mapping[int, float], seqs: Mapping[int, Sequence[int]]) -> dict[int, float]:
    """Exclusive probability of each score from the probability of its token sequence.

    seq_probs[s]: p(the continuation starts with seqs[s]). When one score's tokens prefix another's
    (SmolLM2 spells 10 as `1` `0`), p(`1`) includes p(`10`), so each score gives up the mass of its
    immediate extensions: p(s) = p_seq(s) − Σ_{children c} p_seq(c).
    """
    out = {}
    for s, toks in seqs.items():
        ext = [c for c, t in seqs.items() if len(t) > len(toks) and tuple(t[:len(toks)]) == tuple(toks)]
        children = [c for c in ext if not any(len(seqs[d]) < len(seqs[c]) and
                                              tuple(seqs[c][:len(seqs[d])]) == tuple(seqs[d]) for d in ext)]
        out[s] = max(0.0, seq_probs.get(s, 0.0) - sum(seq_probs.get(c, 0.0) for c in children))
    return out


def expected_score(probs: Mapping[int, float], lo: int, hi: int) -> tuple[float, float]:
    """(reward in [−1, 1], probability mass on the scores).

    E[s] = Σ s·p(s) / Σ p(s) over the scores lo..hi, then rescaled linearly: lo → −1, hi → +1.
    With no mass on any score the reward is 0 (the midpoint).
    """
    mass = sum(probs.get(s, 0.0) for s in range(lo, hi + 1))
    if mass <= 0:
        return 0.0, 0.0
    e = sum(s * probs.get(s, 0.0) for s in range(lo, hi + 1)) / mass
    return 2.0 * (e - lo) / (hi - lo) - 1.0, mass
