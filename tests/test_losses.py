"""cai.train.losses against numbers computed by hand (σ(1) = 0.7310586, log(1+e^-2) = 0.1269280)."""
import math

import pytest
import torch

from cai.train import losses

T = torch.tensor
LOG_SIG_NEG1 = math.log(1 + math.e ** -1)  # −log σ(1) = 0.3132617
LOG_SIG_NEG2 = math.log(1 + math.e ** -2)  # −log σ(2) = 0.1269280


def close(a, b, tol=1e-6):
    assert torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64),
                          atol=tol), (a, b)


def test_token_logps_by_hand():
    # logits (0, ln 3) -> p = (1/4, 3/4)
    logits = T([[0.0, math.log(3)], [0.0, math.log(3)]])
    close(losses.token_logps(logits, T([1, 0])), [math.log(0.75), math.log(0.25)])


def test_shifted_completion_logps_scores_next_tokens_under_the_mask():
    # uniform logits over 2 tokens: every scored token has log 1/2; mask [0, 1, 1] scores tokens 1 and 2
    logits = torch.zeros(1, 3, 2)
    ids = T([[0, 1, 1]])
    close(losses.shifted_completion_logps(logits, ids, T([[0, 1, 1]])), [2 * math.log(0.5)])
    close(losses.shifted_completion_logps(logits, ids, T([[0, 0, 1]])), [math.log(0.5)])


def test_masked_mean():
    close(losses.masked_mean(T([1.0, 2.0, 10.0]), T([1, 1, 0])), 1.5)
    close(losses.masked_mean(T([1.0]), T([0])), 0.0)


def test_bradley_terry_hard_soft_and_margin():
    rc, rr = T([2.0]), T([0.0])
    close(losses.bradley_terry_loss(rc, rr), [LOG_SIG_NEG2])  # 0.126928
    # p = 0.75: 0.75·0.126928 + 0.25·2.126928 = 0.626928
    close(losses.bradley_terry_loss(rc, rr, T([0.75])), [0.6269280])
    # p = 0.5 is symmetric: 0.5·(0.126928 + 2.126928) = 1.126928
    close(losses.bradley_terry_loss(rc, rr, T([0.5])), [1.1269280])
    # margin 1: −log σ(2 − 1) = 0.3132617
    close(losses.bradley_terry_loss(rc, rr, margin=1.0), [LOG_SIG_NEG1])
    close(losses.bradley_terry_loss(rc, rr, T([1.0])), [LOG_SIG_NEG2])
    # hard p = 0 with margin 1: rejected won, −log σ(−2 − 1) = log(1 + e³) = 3.0485874
    close(losses.bradley_terry_loss(rc, rr, T([0.0]), 1.0), [math.log(1 + math.e ** 3)])


def test_bradley_terry_soft_optimum_is_calibrated_and_a_margin_on_soft_labels_is_refused():
    # p = 0.75: the optimum is d = logit(0.75) = ln 3, where the loss is the label's entropy
    # 0.75·ln(4/3) + 0.25·ln 4 = 0.5623351 and its gradient 0.25·σ(ln 3) − 0.75·σ(−ln 3) = 0.1875 − 0.1875 = 0
    d = T([math.log(3)], requires_grad=True)
    loss = losses.bradley_terry_loss(d, T([0.0]), T([0.75]))
    close(loss.detach(), [0.75 * math.log(4 / 3) + 0.25 * math.log(4)])
    loss.sum().backward()
    close(d.grad, [0.0])
    # with margin 1 the two-sided soft loss would sit at σ(d*) = 0.856 (d* = 1.782 solves
    # 0.75·σ(1 − d) = 0.25·σ(d + 1)), not 0.75: refused, per pair and for a scalar margin
    with pytest.raises(ValueError, match="margin is for hard labels"):
        losses.bradley_terry_loss(T([1.782]), T([0.0]), T([0.75]), 1.0)
    with pytest.raises(ValueError, match="margin is for hard labels"):
        losses.bradley_terry_loss(T([2.0, 2.0]), T([0.0, 0.0]), T([1.0, 0.75]), T([1.0, 0.5]))
    # a margin only on the hard pair of a mixed batch is fine: [−log σ(2 − 1), 0.626928 (p = 0.75, no margin)]
    close(losses.bradley_terry_loss(T([2.0, 2.0]), T([0.0, 0.0]), T([1.0, 0.75]), T([1.0, 0.0])),
          [LOG_SIG_NEG1, 0.6269280])


def test_center_rewards_and_normalization():
    close(losses.center_rewards_penalty(T([1.0]), T([2.0])), [9.0])
    assert losses.reward_normalization(T([1.0, 3.0])) == pytest.approx((1.0, -2.0))
    assert losses.reward_normalization(T([0.0, 4.0])) == pytest.approx((0.5, -1.0))
    assert losses.reward_normalization(T([5.0, 5.0])) == pytest.approx((1.0, -5.0))


def test_dpo_sigmoid_and_cdpo():
    # h = 1 − (−1) = 2, β = 0.5 -> βh = 1
    close(losses.dpo_sigmoid(T([1.0]), T([-1.0]), 0.5), [LOG_SIG_NEG1])  # 0.3132617
    # ε = 0.2: 0.8·0.3132617 + 0.2·1.3132617 = 0.5132617
    close(losses.dpo_sigmoid(T([1.0]), T([-1.0]), 0.5, 0.2), [0.5132617])
    # per-pair ε from soft labels
    close(losses.dpo_sigmoid(T([1.0, 1.0]), T([-1.0, -1.0]), 0.5, T([0.0, 0.2])), [0.3132617, 0.5132617])
    assert losses.DPO_LOSSES["cdpo"] is losses.dpo_sigmoid


def test_rpo_nll_is_the_chosen_per_token_nll():
    # chosen summed log-probs −6 over 3 tokens -> 2.0; −1 over 0 tokens is guarded by clamp(min=1) -> 1.0
    close(losses.rpo_nll(T([-6.0, -1.0]), T([3.0, 0.0])), [2.0, 1.0])


def test_dpo_robust():
    # (0.8·0.3132617 − 0.2·1.3132617) / 0.6 = −0.0200715
    close(losses.dpo_robust(T([1.0]), T([-1.0]), 0.5, 0.2), [-0.0200715])
    close(losses.dpo_robust(T([1.0]), T([-1.0]), 0.5, 0.0), [LOG_SIG_NEG1])
    close(losses.dpo_robust(T([1.0]), T([-1.0]), 0.5, T(0.2)), [-0.0200715])  # a 0-d tensor is one number


def test_dpo_robust_takes_one_flip_rate_not_one_per_pair():
    # per pair, ε = 1 − p = 0.49 at p = 0.51 would divide by 1 − 2ε = 0.02: refused
    with pytest.raises(ValueError, match="one flip rate"):
        losses.dpo_robust(T([1.0, 1.0]), T([-1.0, -1.0]), 0.5, T([0.05, 0.49]))
    for bad in (0.5, 0.7, -0.1):
        with pytest.raises(ValueError, match="0 <= ε < 0.5"):
            losses.dpo_robust(T([1.0]), T([-1.0]), 0.5, bad)
    # the dataset's ε from soft labels: mean(1 − p) of [0.95, 0.95, 0.95, 0.51] = (3·0.05 + 0.49)/4 = 0.16
    eps = losses.flip_rate_from_soft_labels(T([0.95, 0.95, 0.95, 0.51]))
    assert eps == pytest.approx(0.16)
    # with one ε every pair gets the same weight: at h = 0 the gradient is −β/(2(1 − 2ε)) = −1/1.36 per pair
    # (per-pair ε would give −1/1.8 = −0.556 and −1/0.04 = −25: the p = 0.51 pair 45× the others)
    c = T([0.0, 0.0, 0.0, 0.0], requires_grad=True)
    losses.dpo_robust(c, T([0.0, 0.0, 0.0, 0.0]), 1.0, eps).sum().backward()
    close(c.grad, [-1 / 1.36] * 4)
    # its value at βh = 1 by hand: (0.84·0.3132617 − 0.16·1.3132617) / 0.68 = 0.0779676
    close(losses.dpo_robust(T([1.0]), T([-1.0]), 0.5, eps), [(0.84 * LOG_SIG_NEG1 - 0.16 * (1 + LOG_SIG_NEG1)) / 0.68])
    close(losses.dpo_robust(T([1.0]), T([-1.0]), 0.5, eps), [0.0779676])


def test_dpo_ipo_averages_log_ratios_per_token():
    # chosen 4/2 tokens = 2, rejected −2/4 tokens = −0.5, h̄ = 2.5; 1/(2β) = 1 -> (1.5)² = 2.25
    out = losses.dpo_ipo(T([4.0]), T([-2.0]), 0.5, chosen_len=T([2]), rejected_len=T([4]))
    close(out, [2.25])


def test_implicit_rewards():
    rc, rr = losses.dpo_implicit_rewards(T([2.0]), T([-1.0]), 0.1)
    close(rc, [0.2])
    close(rr, [-0.1])


def test_every_dpo_variant_is_differentiable_and_finite():
    c = T([0.3, -0.2], requires_grad=True)
    r = T([-0.1, 0.4], requires_grad=True)
    for name, fn in losses.DPO_LOSSES.items():
        out = fn(c, r, 0.1, 0.1 if name != "ipo" else 0.0, chosen_len=T([3, 4]), rejected_len=T([2, 5]))
        out.sum().backward()
        assert torch.isfinite(out).all() and c.grad is not None, name
        c.grad = r.grad = None
