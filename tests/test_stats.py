"""Intervals of `cai.evaluate.stats` against numbers computed by hand (each line shows its arithmetic) and
against published values."""
import math

import pytest

from cai.evaluate.stats import (
    bootstrap_ci,
    clopper_pearson_ci,
    newcombe_paired_ci,
    pair_by_id,
    paired_diff_ci,
    wilson_ci,
)

Z = 1.959963984540054  # the 0.975 quantile of the standard normal


def test_zero_of_forty_has_a_nonzero_upper_bound():
    # exact: the upper bound solves (1 - p)^40 = 0.025 -> p = 1 - 0.025^(1/40) = 0.088110
    cp = clopper_pearson_ci(0, 40)
    assert cp["ci_low"] == 0.0 and cp["ci_high"] == pytest.approx(1 - 0.025 ** (1 / 40), abs=1e-6)
    assert cp["ci_high"] == pytest.approx(0.0881, abs=1e-4)
    # Wilson at k = 0: upper = z² / (n + z²) = 3.841459 / 43.841459 = 0.087622
    w = wilson_ci(0, 40)
    assert w["ci_high"] == pytest.approx(Z * Z / (40 + Z * Z), abs=1e-6) and w["ci_high"] > 0.08
    # the bootstrap, by contrast, is zero-width on a constant sample: why rates never use it
    assert bootstrap_ci([0.0] * 40)["ci_high"] == 0.0


def test_wilson_five_of_twenty():
    # p = 0.25, z²/n = 0.192073: centre (0.25 + 0.096037) / 1.192073 = 0.290282;
    # half z·sqrt(0.25·0.75/20 + z²/1600) / 1.192073 = 1.959964·sqrt(0.009375 + 0.002401) / 1.192073 = 0.178420
    w = wilson_ci(5, 20)
    assert (w["value"], w["n"], w["k"]) == (0.25, 20, 5)
    assert w["ci_low"] == pytest.approx(0.111862, abs=1e-5) and w["ci_high"] == pytest.approx(0.468701, abs=1e-5)


def test_clopper_pearson_five_of_twenty_and_all_of_n():
    # exact 95% interval for 5/20: Beta(0.025; 5, 16) = 0.086571, Beta(0.975; 6, 15) = 0.491046 (tables)
    cp = clopper_pearson_ci(5, 20)
    assert cp["ci_low"] == pytest.approx(0.086571, abs=1e-5) and cp["ci_high"] == pytest.approx(0.491046, abs=1e-5)
    # k = n: the lower bound solves p^n = 0.025 -> 0.025^(1/40) = 0.911890
    assert clopper_pearson_ci(40, 40)["ci_low"] == pytest.approx(0.025 ** (1 / 40), abs=1e-6)
    assert clopper_pearson_ci(40, 40)["ci_high"] == 1.0
    with pytest.raises(ValueError, match="whole number"):
        clopper_pearson_ci(2.5, 10)


def test_empty_rate_is_none():
    assert wilson_ci(0, 0) == {"value": None, "ci_low": None, "ci_high": None, "n": 0}


def test_newcombe_paired_published_example():
    # Newcombe (1998), Statistics in Medicine 17:2635, example (a): e=36 pairs both 1, f=12, g=2, h=0.
    # Method 10 gives 0.0569 to 0.3404 for the difference 0.2.
    a = [1] * 36 + [1] * 12 + [0] * 2
    b = [1] * 36 + [0] * 12 + [1] * 2
    d = newcombe_paired_ci(a, b)
    assert d["value"] == pytest.approx(0.2) and d["n"] == 50
    assert d["ci_low"] == pytest.approx(0.0569, abs=1e-4) and d["ci_high"] == pytest.approx(0.3404, abs=1e-4)


def test_newcombe_paired_by_hand():
    # e=1, f=2, g=0, h=1 (n=4): p1 = 3/4, p2 = 1/4, Δ = 0.5; eh - fg = 1 <= n/2 -> φ = 0, so the bounds
    # are Δ - sqrt((p1-l1)² + (u2-p2)²) and Δ + sqrt((u1-p1)² + (p2-l2)²) with the Wilson bounds of 3/4 and 1/4
    # (l1, u1) = (0.300642, 0.954412), (l2, u2) = (0.045588, 0.699358)
    d = newcombe_paired_ci([1, 1, 1, 0], [1, 0, 0, 0])
    lo = 0.5 - math.sqrt((0.75 - 0.300642) ** 2 + (0.699358 - 0.25) ** 2)
    hi = 0.5 + math.sqrt((0.954412 - 0.75) ** 2 + (0.25 - 0.045588) ** 2)
    assert d["ci_low"] == pytest.approx(lo, abs=1e-5) and d["ci_high"] == pytest.approx(hi, abs=1e-5)
    # no change on any prompt still gives a non-degenerate interval around 0
    z = newcombe_paired_ci([0] * 10, [0] * 10)
    assert z["value"] == 0 and z["ci_low"] < 0 < z["ci_high"]
    with pytest.raises(ValueError, match="0/1"):
        newcombe_paired_ci([0.5], [1])


def test_pair_by_id_drops_a_prompt_missing_on_either_side():
    ids, a, b = pair_by_id({"p0": 1.0, "p1": None, "p2": 0.0, "p3": 1.0}, {"p0": 0.0, "p1": 1.0, "p3": None, "p4": 1.0})
    assert (ids, a, b) == (["p0"], [1.0], [0.0])  # p1, p3 None on one side; p2, p4 absent on one


def test_paired_bootstrap_shifts_exactly():
    # a = b + 2 on every prompt: every resampled mean difference is 2, whatever the resample
    d = paired_diff_ci([3.0, 5.0, 9.0], [1.0, 3.0, 7.0], n_boot=200)
    assert (d["value"], d["ci_low"], d["ci_high"], d["n"]) == (2.0, 2.0, 2.0, 3)
