"""PPO and RLOO pieces of cai.train.losses against numbers computed by hand, and RLOO against TRL 1.16's
RLOOTrainer on the same inputs (its `_compute_loss` called directly; its advantage lines re-run verbatim)."""
import math
from collections import defaultdict
from types import SimpleNamespace

import torch

from cai.train import losses

T = torch.tensor


def close(a, b, tol=1e-6):
    assert torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64),
                          atol=tol), (a, b)


def test_truncate_after_eos_and_no_eos_penalty():
    ids, mask, has_eos = losses.truncate_after_eos(T([[5, 2, 7, 2], [5, 6, 7, 8]]), [2], pad_id=0)
    assert ids.tolist() == [[5, 2, 0, 0], [5, 6, 7, 8]]  # kept through the first EOS, padded after
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]  # no EOS: all R tokens (length limit)
    assert has_eos.tolist() == [True, False]
    # no EOS within the limit: fixed score −1 replaces the reward model's 0.7
    close(losses.penalize_no_eos(T([0.5, 0.7]), has_eos, -1.0), [0.5, -1.0])


def test_kl_shaped_rewards_put_the_score_on_the_last_real_token():
    logps = T([[-1.0, -2.0, 0.0], [-1.0, -1.0, -1.0]])
    ref = T([[-1.5, -1.0, 0.0], [-2.0, -1.0, -1.0]])
    mask = T([[1, 1, 0], [1, 1, 1]])
    rewards, kl = losses.kl_shaped_rewards(T([1.0, 2.0]), logps, ref, mask, beta=0.1)
    close(kl, [[0.5, -1.0, 0.0], [1.0, 0.0, 0.0]])  # log π − log π_ref, 0 on padding
    # row 0: −0.1·0.5 = −0.05; −0.1·(−1) + 1 = 1.1 (last real token is t=1); row 1: −0.1·1 = −0.1; 0; 0 + 2
    close(rewards, [[-0.05, 1.1, 0.0], [-0.1, 0.0, 2.0]])


def test_gae_by_hand():
    r, v, m = T([[0.0, 0.0, 1.0]]), T([[0.5, 0.2, 0.4]]), T([[1, 1, 1]])
    # λ = 0.5: δ2 = 1 − 0.4 = 0.6 -> A2 = 0.6; δ1 = 0.4 − 0.2 = 0.2 -> A1 = 0.2 + 0.5·0.6 = 0.5;
    # δ0 = 0.2 − 0.5 = −0.3 -> A0 = −0.3 + 0.5·0.5 = −0.05; returns = A + V
    adv, ret = losses.gae_advantages(r, v, m, gamma=1.0, lam=0.5)
    close(adv, [[-0.05, 0.5, 0.6]])
    close(ret, [[0.45, 0.7, 1.0]])
    # λ = 1, γ = 1: returns are the undiscounted reward-to-go (all 1); A = 1 − V
    adv, ret = losses.gae_advantages(r, v, m, gamma=1.0, lam=1.0)
    close(adv, [[0.5, 0.8, 0.6]])
    close(ret, [[1.0, 1.0, 1.0]])
    # default λ = 0.95: A1 = 0.2 + 0.95·0.6 = 0.77; A0 = −0.3 + 0.95·0.77 = 0.4315
    close(losses.gae_advantages(r, v, m)[0], [[0.4315, 0.77, 0.6]])


def test_gae_ends_the_episode_at_the_mask():
    # the padded token's reward 9 and value 7 are ignored: δ1 = 1 + 0 − 0.2 = 0.8; A0 = −0.3 + 0.5·0.8 = 0.1
    adv, ret = losses.gae_advantages(T([[0.0, 1.0, 9.0]]), T([[0.5, 0.2, 7.0]]), T([[1, 1, 0]]), lam=0.5)
    close(adv, [[0.1, 0.8, 0.0]])
    close(ret, [[0.6, 1.0, 0.0]])


def test_whiten_masked_unbiased():
    close(losses.whiten(T([[1.0, 2.0, 3.0]]), T([[1, 1, 1]])), [[-1.0, 0.0, 1.0]])  # mean 2, var (1+0+1)/2
    s = 1 / math.sqrt(2)  # mean 2, unbiased var (1+1)/1 = 2 over the two real tokens
    close(losses.whiten(T([[1.0, 3.0, 100.0]]), T([[1, 1, 0]])), [[-s, s, 0.0]])
    # [0, 4]: mean 2, var 8, std 2.828427 -> ±0.707107; shift_mean=False adds the mean back
    close(losses.whiten(T([[0.0, 4.0]]), T([[1, 1]]), shift_mean=False), [[2 - s, 2 + s]])


def test_ppo_policy_loss_clips_both_ways():
    lp = torch.log(T([1.5, 1.5, 0.5, 0.5, 1.1]))
    adv = T([1.0, -1.0, 1.0, -1.0, 2.0])
    # ρ=1.5,A=1: max(−1.5, −1.2) = −1.2; ρ=1.5,A=−1: max(1.5, 1.2) = 1.5; ρ=0.5,A=1: max(−0.5, −0.8) = −0.5;
    # ρ=0.5,A=−1: max(0.5, 0.8) = 0.8; ρ=1.1 (inside), A=2: −2.2
    close(losses.ppo_policy_loss(lp, torch.zeros(5), adv, 0.2), [-1.2, 1.5, -0.5, 0.8, -2.2])
    close(losses.clip_fraction(lp, torch.zeros(5), 0.2), [1.0, 1.0, 1.0, 1.0, 0.0])
    close(losses.approx_kl(torch.log(T([2.0])), T([0.0])), [0.5 * math.log(2) ** 2])  # 0.2402265


def test_ppo_value_loss_by_hand():
    v, old, ret = T([1.0, 0.6, 1.0]), T([0.5, 0.5, 0.5]), T([0.0, 1.0, 2.0])
    # 1: max(1², (0.7−0)²) = 1 -> 0.5;  2: inside the clip, (0.4)² = 0.16 -> 0.08;
    # 3: max((1−2)², (0.7−2)²) = 1.69 -> 0.845 (the clipped value is further from the return)
    close(losses.ppo_value_loss(v, old, ret, 0.2), [0.5, 0.08, 0.845])


def test_entropy_and_adaptive_kl():
    close(losses.entropy_from_logits(torch.zeros(4)), math.log(4))  # uniform over 4: 1.386294
    # p = (1/4, 3/4): −(0.25·ln 0.25 + 0.75·ln 0.75) = 0.5623351
    close(losses.entropy_from_logits(T([0.0, math.log(3)])), 0.5623351)
    # KL 9 vs target 6: e = clip(0.5) = 0.2 -> 0.1·(1 + 0.2·64/10000) = 0.100128
    assert math.isclose(losses.adaptive_kl_beta(0.1, 9.0, 6.0, 10000, 64), 0.100128, rel_tol=1e-9)
    # KL 5.4: e = −0.1 -> 0.1·(1 − 0.1·64/10000) = 0.099936
    assert math.isclose(losses.adaptive_kl_beta(0.1, 5.4, 6.0, 10000, 64), 0.099936, rel_tol=1e-9)


def test_rloo_advantages_by_hand():
    # K = 3; r = score − 0.1·kl = [1, 1, 6 | 0, 0, 3]
    adv = losses.rloo_advantages(T([1.0, 2.0, 6.0, 0.0, 0.0, 3.0]), T([0.0, 10.0, 0.0, 0.0, 0.0, 0.0]), 3, 0.1)
    # baselines [(1+6)/2, (1+6)/2, (1+1)/2 | 1.5, 1.5, 0] -> A = [−2.5, −2.5, 5 | −1.5, −1.5, 3]
    close(adv, [-2.5, -2.5, 5.0, -1.5, -1.5, 3.0])


# ---- against TRL 1.16 ---------------------------------------------------------------------------------


def _trl_advantages(rewards, old_per_token_logps, ref_per_token_logps, completion_mask, beta, num_generations):
    """trl/trainer/rloo_trainer.py (TRL 1.16.0) lines 1664-1699, verbatim minus gather() (one process) and
    the unscorable/normalisation branches (no None rewards; normalize_advantages=False, TRL's default)."""
    from trl.trainer.utils import nanstd  # noqa: F401 - the std TRL logs; imported to pin the TRL version
    per_token_kl = old_per_token_logps - ref_per_token_logps
    kl = (per_token_kl * completion_mask).sum(-1)
    rewards = rewards - beta * kl
    grouped_rewards = rewards.view(-1, num_generations)
    scorable_counts = (~torch.isnan(grouped_rewards)).sum(dim=1, keepdim=True)
    grouped_sum = torch.nansum(grouped_rewards, dim=1, keepdim=True)
    baselines = (grouped_sum - grouped_rewards) / (scorable_counts - 1)
    baselines = baselines.view(-1)
    advantages = rewards - baselines
    return torch.nan_to_num(advantages, nan=0.0)


def _trl_loss(per_token_logps, old_logps, advantages, completion_mask, epsilon):
    """TRL's own `RLOOTrainer._compute_loss`, run on a stand-in `self` whose forward returns our log-probs."""
    from trl.trainer.rloo_trainer import RLOOTrainer
    acc = SimpleNamespace(reduce=lambda t, reduction: t, gather=lambda t: t,
                          gather_for_metrics=lambda t: t)
    fake = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (per_token_logps, torch.zeros_like(per_token_logps), None),
        accelerator=acc, model=SimpleNamespace(training=True), _metrics={"train": defaultdict(list)},
        epsilon_low=epsilon, epsilon_high=epsilon, aux_loss_enabled=False)
    B, R = per_token_logps.shape
    inputs = {"prompt_ids": torch.zeros(B, 2, dtype=torch.long), "prompt_mask": torch.ones(B, 2, dtype=torch.long),
              "completion_ids": torch.zeros(B, R, dtype=torch.long), "completion_mask": completion_mask,
              "old_logps": old_logps, "advantages": advantages}
    return RLOOTrainer._compute_loss(fake, None, inputs)


def test_rloo_matches_trl_1_16():
    g = torch.Generator().manual_seed(0)
    P, K, R, beta, eps = 3, 4, 6, 0.05, 0.2
    B = P * K
    mask = (torch.arange(R)[None] < torch.randint(2, R + 1, (B, 1), generator=g)).long()  # (B, R)
    old = -torch.rand(B, R, generator=g) * 3
    ref = old + 0.3 * torch.randn(B, R, generator=g)
    new = old + 0.15 * torch.randn(B, R, generator=g)  # ratios inside and outside the clip
    scores = torch.randn(B, generator=g)

    trl_adv = _trl_advantages(scores, old, ref, mask, beta, K)
    ours_adv = losses.rloo_advantages(scores, ((old - ref) * mask).sum(-1), K, beta)
    close(ours_adv, trl_adv, 1e-4)

    old_seq, new_seq = (old * mask).sum(-1), (new * mask).sum(-1)
    trl = _trl_loss(new, old_seq, trl_adv, mask, eps)
    ours = losses.rloo_policy_loss(new_seq, old_seq, ours_adv, eps).mean()
    assert abs(ours.item() - trl.item()) < 1e-4, (ours.item(), trl.item())
    clipped = losses.clip_fraction(new_seq, old_seq, eps)
    assert 0 < clipped.mean() < 1  # the inputs exercise both the clipped and the unclipped branch
