"""Confidence intervals for the figures of `cai eval values`.

- A **rate** (k of n answers refused, passed a check, ...) gets a score or exact binomial interval:
  Wilson (1927) by default, Clopper-Pearson (1934) on request. Neither is ever zero-width: 0 of 40
  has a 95% upper bound of 8.81% (exact) or 8.76% (Wilson), where a percentile bootstrap prints [0, 0].
- A **paired difference of rates** (model minus baseline on the same prompts) gets Newcombe's (1998)
  method 10: Wilson intervals of both margins combined with the correlation of the paired 2x2 table.
- A **mean of a non-binary value** (words per answer, a judge score in {0, 0.5, 1}, a rubric score) and
  the paired difference of two such means get a percentile bootstrap over prompts (Efron & Tibshirani
  1993, ch. 13); for a difference, both answers to a prompt are resampled together.

Every function returns `{value, ci_low, ci_high, n}` (plus `k` for rates) so that a figure always carries
the number of prompts it rests on.
"""
from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from statistics import NormalDist


def _z(confidence: float) -> float:
    """Two-sided standard normal quantile, e.g. 1.959964 for 0.95."""
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def _empty() -> dict[str, float | None]:
    return {"value": None, "ci_low": None, "ci_high": None, "n": 0}


def _rate(k: float, n: int, lo: float, hi: float, method: str) -> dict:
    return {"value": round(k / n, 6), "ci_low": round(max(0.0, lo), 6), "ci_high": round(min(1.0, hi), 6),
            "n": n, "k": k, "method": method}


def wilson_bounds(k: float, n: int, confidence: float) -> tuple[float, float]:
    """Wilson (1927) score interval of a proportion k/n, without continuity correction:

        (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n),   p = k/n.

    `k` may be fractional (a judge score with ties counted as half a win): the interval then treats the
    ties as half a success each, which is conservative because a tie has less variance than a coin flip.
    """
    z = _z(confidence)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return centre - half, centre + half


def wilson_ci(k: float, n: int, confidence: float = 0.95) -> dict:
    """The rate k/n with its Wilson interval: `{value, ci_low, ci_high, n, k, method}`; n = 0 gives None."""
    if n == 0:
        return _empty()
    return _rate(k, n, *wilson_bounds(k, n, confidence), "wilson")


def _binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space so n in the thousands stays exact enough."""
    if p <= 0:
        return 1.0
    if p >= 1:
        return 0.0 if k < n else 1.0
    lp, lq = math.log(p), math.log1p(-p)
    return min(1.0, sum(math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp
                                 + (n - i) * lq) for i in range(k + 1)))


def _solve(f: Callable[[float], float], target: float) -> float:
    """p in [0, 1] with f(p) = target for f decreasing in p (bisection to 1e-12)."""
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if f(mid) > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def clopper_pearson_ci(k: int, n: int, confidence: float = 0.95) -> dict:
    """The rate k/n with its exact (Clopper & Pearson 1934) interval: the p whose binomial tails put
    (1-c)/2 on each side, i.e. P(X >= k | lo) = (1-c)/2 and P(X <= k | hi) = (1-c)/2. For k = 0 the
    upper bound is 1 - ((1-c)/2)^(1/n): 0.0881 for 0 of 40 at 95%."""
    if n == 0:
        return _empty()
    if k != int(k):
        raise ValueError(f"the exact interval needs a whole number of successes, got {k}")
    k, a = int(k), (1 - confidence) / 2
    lo = 0.0 if k == 0 else _solve(lambda p: _binom_cdf(k - 1, n, p), 1 - a)  # P(X >= k | lo) = a
    hi = 1.0 if k == n else _solve(lambda p: _binom_cdf(k, n, p), a)
    return _rate(k, n, lo, hi, "clopper-pearson")


RATE_INTERVALS: dict[str, Callable[..., dict]] = {"wilson": wilson_ci, "clopper-pearson": clopper_pearson_ci}
"""Interval of a single rate, by name (`ValuesConfig.interval`)."""


def newcombe_paired_ci(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> dict:
    """mean(a) - mean(b) for 0/1 outcomes paired by prompt, with Newcombe's (1998, Statistics in Medicine
    17:2635, method 10) interval. With the paired table (e: both 1, f: a only, g: b only, h: neither),
    p1 = (e+f)/n, p2 = (e+g)/n, Wilson intervals (l1, u1) and (l2, u2), and

        φ = C / sqrt((e+f)(g+h)(e+g)(f+h)),  C = eh-fg - n/2 if eh-fg > n/2, eh-fg if eh-fg < 0, else 0,
        Δ = p1 - p2,  lower = Δ - sqrt((p1-l1)² - 2φ(p1-l1)(u2-p2) + (u2-p2)²),
                      upper = Δ + sqrt((u1-p1)² - 2φ(u1-p1)(p2-l2) + (p2-l2)²).

    φ = 0 when a margin is empty. `a` and `b` have shape (N,), aligned by prompt.
    """
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} vs {len(b)}")
    n = len(a)
    if n == 0:
        return _empty()
    if any(x not in (0, 1) for x in (*a, *b)):
        raise ValueError("Newcombe's paired interval needs 0/1 outcomes")
    e = sum(1 for x, y in zip(a, b) if x and y)
    f = sum(1 for x, y in zip(a, b) if x and not y)
    g = sum(1 for x, y in zip(a, b) if y and not x)
    h = n - e - f - g
    p1, p2 = (e + f) / n, (e + g) / n
    l1, u1 = wilson_bounds(e + f, n, confidence)
    l2, u2 = wilson_bounds(e + g, n, confidence)
    margins = (e + f) * (g + h) * (e + g) * (f + h)
    cross = e * h - f * g
    c = cross - n / 2 if cross > n / 2 else cross if cross < 0 else 0.0
    phi = c / math.sqrt(margins) if margins else 0.0
    d = p1 - p2
    lo = d - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    hi = d + math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return {"value": round(d, 6), "ci_low": round(max(-1.0, lo), 6), "ci_high": round(min(1.0, hi), 6), "n": n,
            "method": "newcombe-paired"}


def _percentile(sorted_xs: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default) of an ascending list, q in [0, 1]."""
    pos = q * (len(sorted_xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


def bootstrap_ci(xs: Sequence[float], *, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict:
    """Mean of `xs` (shape (N,)) with a percentile-bootstrap interval: `{value, ci_low, ci_high, n}`.

    Resamples N values with replacement `n_boot` times; the interval is the (1-c)/2 and (1+c)/2
    percentiles of the resampled means. For means of non-binary values only: a constant input gives a
    zero-width interval, which is why rates use `wilson_ci`.
    """
    n = len(xs)
    if n == 0:
        return _empty()
    rng = random.Random(seed)
    means = sorted(sum(xs[rng.randrange(n)] for _ in range(n)) / n for _ in range(n_boot))
    alpha = (1.0 - confidence) / 2
    return {"value": round(sum(xs) / n, 6), "ci_low": round(_percentile(means, alpha), 6),
            "ci_high": round(_percentile(means, 1 - alpha), 6), "n": n, "method": "bootstrap"}


def paired_diff_ci(a: Sequence[float], b: Sequence[float], **kw) -> dict:
    """mean(a - b) with a paired bootstrap interval over prompts; a and b have shape (N,), aligned by prompt."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} vs {len(b)}")
    return {**bootstrap_ci([x - y for x, y in zip(a, b)], **kw), "method": "paired-bootstrap"}


def pair_by_id(a: dict[str, float | None], b: dict[str, float | None]) -> tuple[list[str], list[float], list[float]]:
    """The prompt ids scored on both sides (a missing or None value on either side drops the prompt from
    both), in `a`'s order, and the two aligned value lists."""
    ids = [k for k, v in a.items() if v is not None and b.get(k) is not None]
    return ids, [a[k] for k in ids], [b[k] for k in ids]
