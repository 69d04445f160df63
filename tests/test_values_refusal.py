"""Bootstrap intervals and contextual calibration of `cai eval values`. The refusal detector is measured on
hand-labelled real answers in `tests/test_refusal_detector.py`."""
import pytest

from cai.evaluate.stats import bootstrap_ci, paired_diff_ci


def test_bootstrap_ci_hand_computed():
    const = bootstrap_ci([1.0, 1.0, 1.0, 1.0], n_boot=200)
    assert const == {"value": 1.0, "ci_low": 1.0, "ci_high": 1.0, "n": 4, "method": "bootstrap"}
    ci = bootstrap_ci([0.0] * 5 + [1.0] * 5, n_boot=2000, seed=1)
    # mean 0.5; the resampled mean is Binomial(10, 0.5)/10, whose 2.5%/97.5% quantiles are 0.2 and 0.8
    assert ci["value"] == 0.5 and ci["ci_low"] == pytest.approx(0.2, abs=0.1001) and \
        ci["ci_high"] == pytest.approx(0.8, abs=0.1001) and ci["ci_low"] < 0.5 < ci["ci_high"]
    assert bootstrap_ci([]) == {"value": None, "ci_low": None, "ci_high": None, "n": 0}
    # paired: model refuses on prompts 1-3, baseline on prompt 1 only -> delta = (0+1+1+0)/4 = 0.5
    d = paired_diff_ci([1, 1, 1, 0], [1, 0, 0, 0], n_boot=500)
    assert d["value"] == 0.5 and d["ci_low"] >= 0.0 and d["ci_high"] <= 1.0
    with pytest.raises(ValueError):
        paired_diff_ci([1], [1, 0])


def test_contextual_calibration_hand_computed():
    from cai.evaluate.calibration import calibrate
    assert calibrate(0.7, 0.5) == pytest.approx(0.7)  # an unbiased judge is unchanged
    assert calibrate(0.8, 0.8) == pytest.approx(0.5)  # the bias alone carries no preference
    # p = 0.6 with p_cf = 0.75: q_A = 0.6 / 0.75 = 0.8, q_B = 0.4 / 0.25 = 1.6 -> 0.8 / 2.4 = 1/3
    assert calibrate(0.6, 0.75) == pytest.approx(1 / 3)
