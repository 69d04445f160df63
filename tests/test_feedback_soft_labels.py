"""Pure label math of RL-CAI feedback against numbers computed by hand (no engine)."""
import math

import pytest

from cai.errors import InputError
from cai.feedback.config import LabelConfig, SampleConfig
from cai.feedback.sample import make_pairs
from cai.feedback.soft_labels import (
    Preference,
    clamp,
    expected_score,
    option_probs,
    option_variants,
    score_distribution,
)

L = math.log


def test_option_variants_cover_spellings():
    vocab = ["A", " A", "(A", " (A", "AB", "a", "B", " B", "(", "Answer", " ( B"]
    assert option_variants(vocab, "A") == [0, 1, 2, 3]
    assert option_variants(vocab, "B") == [6, 7, 10]


def test_option_probs_sums_variants_and_normalises():
    # A: 0.5 + 0.1 (" A"), B: 0.2, rest 0.2  ->  p_A = 0.6 / 0.8 = 0.75, outside = 0.2
    top = {1: L(0.5), 2: L(0.1), 3: L(0.2), 9: L(0.2)}
    pr = option_probs(top, [1, 2], [3, 4])
    assert pr.p_first == pytest.approx(0.75)
    assert pr.mass_first == pytest.approx(0.6) and pr.mass_second == pytest.approx(0.2)
    assert pr.mass_outside == pytest.approx(0.2)
    assert not pr.floored


def test_option_probs_missing_letter_exact_or_floored():
    top = {1: L(0.6), 8: L(0.3), 9: L(0.1)}
    exact = option_probs(top, [1], [3], extra={3: L(0.05)})  # scored exactly: 0.6 / 0.65
    assert exact.p_first == pytest.approx(0.6 / 0.65) and not exact.floored
    floor = option_probs(top, [1], [3])  # bounded by the k-th log-prob 0.1: 0.6 / 0.7
    assert floor.p_first == pytest.approx(0.6 / 0.7) and floor.floored
    assert option_probs({}, [1], [3]).p_first == 0.5


def test_both_orders_average_and_consistency():
    agree = Preference(p_ab=0.8, p_ba=0.4)  # p1 = (0.8 + 0.6) / 2
    assert agree.p1 == pytest.approx(0.7) and agree.order_consistent and agree.first_chosen
    assert agree.p_chosen == pytest.approx(0.7)
    flip = Preference(p_ab=0.7, p_ba=0.8)  # position bias: (A) wins in both orders; p1 = (0.7 + 0.2) / 2
    assert flip.p1 == pytest.approx(0.45) and not flip.order_consistent and not flip.first_chosen
    assert flip.p_chosen == pytest.approx(0.55)


def test_clamp():
    assert clamp(0.99) == 0.6 and clamp(0.01) == 0.4 and clamp(0.55) == 0.55
    assert clamp(0.9, 0.3, 0.7) == 0.7


def test_score_distribution_prefix_and_expectation():
    # SmolLM2 spells 10 as `1` `0`: p("1"...) = 0.5 includes p(10) = 0.2, so p(1) = 0.3.
    seqs = {1: (33,), 2: (34,), 10: (33, 32)}
    dist = score_distribution({1: 0.5, 2: 0.3, 10: 0.2}, seqs)
    assert dist == pytest.approx({1: 0.3, 2: 0.3, 10: 0.2})
    # E = (0.3 + 0.6 + 2.0) / 0.8 = 3.625; reward = 2 (3.625 - 1) / 9 - 1 = -0.41667
    reward, mass = expected_score(dist, 1, 10)
    assert reward == pytest.approx(2 * 2.625 / 9 - 1) and mass == pytest.approx(0.8)
    assert expected_score({10: 0.4}, 1, 10)[0] == pytest.approx(1.0)
    assert expected_score({1: 0.4}, 1, 10)[0] == pytest.approx(-1.0)
    assert expected_score({}, 1, 10) == (0.0, 0.0)


def test_make_pairs_skips_identical_and_empty():
    rs = ["x", " x ", "", "y", "z", None]
    assert make_pairs(rs, "all", 1, "k") == [(0, 3), (0, 4), (3, 4)]
    r1 = make_pairs(rs, "random", 2, "seed:k")
    assert len(r1) == 2 and r1 == make_pairs(rs, "random", 2, "seed:k") and set(r1) <= {(0, 3), (0, 4), (3, 4)}
    assert make_pairs(["same", "same"], "all", 1, "k") == []


def test_configs_reject_bad_values():
    with pytest.raises(InputError, match="mode"):
        LabelConfig(mode="vote")
    with pytest.raises(InputError, match="clamp"):
        LabelConfig(clamp=(0.6, 0.4))
    with pytest.raises(InputError, match="top_k"):
        LabelConfig(top_k=50)
    with pytest.raises(InputError, match="at least 2"):
        SampleConfig(n=1)
    with pytest.raises(InputError, match="pairing"):
        SampleConfig(pairing="some")


def test_option_tokens_real_tokenizer_and_missing_letters(smollm2_dir):
    from transformers import AutoTokenizer

    from cai.feedback.judge import OptionTokens
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    ot = OptionTokens.from_tokenizer(tok, ("A", "B"))
    assert ot.canonical == tuple(tok.convert_tokens_to_ids(["A", "B"]))
    assert {tok.decode([t]) for t in ot.variants[0]} >= {"A", " A"}
    with pytest.raises(InputError, match="no single token for option letter"):
        OptionTokens.from_tokenizer(_NoLetters(tok), ("A", "B"))


class _NoLetters:
    """A tokenizer that spells every letter as two tokens."""

    def __init__(self, tok):
        self.tok = tok

    def __len__(self):
        return 3

    def batch_decode(self, ids):
        return ["x", "y", "z"]

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [1, 2]}
