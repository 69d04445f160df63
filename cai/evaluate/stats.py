"""Bootstrap confidence intervals for the per-prompt figures of `cai eval values`.

Every figure is a mean over prompts of a per-prompt value (1/0 for "refused", a word count, a judge
score in {0, 0.5, 1}), so one percentile bootstrap over prompts serves them all (Efron & Tibshirani
1993, ch. 13). Differences between model and baseline use a *paired* bootstrap: both answers to a
prompt are resampled together, which is tighter than two independent intervals.
"""
from __future__ import annotations

import random
from collections.abc import Sequence


def _percentile(sorted_xs: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default) of an ascending list, q in [0, 1]."""
    pos = q * (len(sorted_xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


def bootstrap_ci(xs: Sequence[float], *, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0
                 ) -> dict[str, float | None]:
    """Mean of `xs` (shape (N,)) with a percentile-bootstrap interval: `{value, ci_low, ci_high}`.

    Resamples N values with replacement `n_boot` times; the interval is the (1-c)/2 and (1+c)/2
    percentiles of the resampled means. An empty input gives None everywhere; a constant input gives a
    zero-width interval.
    """
    n = len(xs)
    if n == 0:
        return {"value": None, "ci_low": None, "ci_high": None}
    rng = random.Random(seed)
    means = sorted(sum(xs[rng.randrange(n)] for _ in range(n)) / n for _ in range(n_boot))
    alpha = (1.0 - confidence) / 2
    return {"value": round(sum(xs) / n, 6), "ci_low": round(_percentile(means, alpha), 6),
            "ci_high": round(_percentile(means, 1 - alpha), 6)}


def paired_diff_ci(a: Sequence[float], b: Sequence[float], **kw) -> dict[str, float | None]:
    """mean(a - b) with a paired bootstrap interval; a and b have shape (N,), aligned by prompt."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} vs {len(b)}")
    return bootstrap_ci([x - y for x, y in zip(a, b)], **kw)
