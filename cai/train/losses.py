"""The math of the training stages, as pure functions on tensors: log-probs, SFT, Bradley-Terry, DPO.

Trainers compute log-probs or rewards and call these; nothing here touches a model, an optimizer or a
config. Every function documents its shapes and the equation it implements, and each one has a test
against hand-computed numbers (tests/test_losses.py) and, where TRL has the same loss, against TRL.
Per-example functions return per-example losses (B,) so that the caller chooses the reduction, which
matters for exact gradient accumulation across micro-batches and processes.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

# ---- log-probs -----------------------------------------------------------------------------------------


def token_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) under softmax(logits), per position.

    logits: (N, V) or (B, T, V), any float dtype (upcast to fp32); targets: (N,) or (B, T) token ids.
    Returns (N,) or (B, T) in fp32. `cross_entropy` fuses log_softmax and the gather, so no (N, V)
    log-prob tensor is kept beyond what autograd needs.
    """
    flat = logits.reshape(-1, logits.size(-1)).float()
    out = -F.cross_entropy(flat, targets.reshape(-1), reduction="none")
    return out.view(targets.shape)


def shifted_completion_logps(logits: torch.Tensor, input_ids: torch.Tensor,
                             completion_mask: torch.Tensor) -> torch.Tensor:
    """Sum over completion tokens of log p(x_t | x_<t): the sequence log-prob DPO uses.

    logits: (B, T, V) from a causal LM over input_ids (B, T); completion_mask: (B, T), 1 on the tokens
    being scored. Position t's logits predict token t+1, hence the shift. Returns (B,).
    """
    per_token = token_logps(logits[:, :-1], input_ids[:, 1:])  # (B, T-1)
    return (per_token * completion_mask[:, 1:]).sum(-1)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` where `mask` is 1. values, mask: same shape. Returns a scalar (0 if mask is empty)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1)


# ---- SFT -----------------------------------------------------------------------------------------------


def sft_token_nll(token_logp: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood −log p(y | x) of supervised tokens (or of their per-row sums). (N,) -> (N,).

    The trainer sums this over the assistant tokens of a global batch and divides by their count, so the
    loss is the token mean over the whole batch whatever the split into micro-batches and processes.
    """
    return -token_logp


# ---- reward model (Bradley-Terry) --------------------------------------------------------------------


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, p_chosen: torch.Tensor | None = None,
                       margin: torch.Tensor | float | None = None) -> torch.Tensor:
    """Bradley-Terry loss on soft labels, or on hard labels with a margin, per pair.

        soft:   L = −[ p · log σ(r_c − r_r) + (1 − p) · log σ(r_r − r_c) ]
        margin: L = −log σ(r_c − r_r − m)      (p = 1; p = 0 is the same with the sides swapped)

    (Bradley & Terry 1952; Ouyang et al. 2022 eq. 1; soft targets as in Bai et al. 2022 §4 / Lee et al.
    2023). The soft loss is minimised at r_c − r_r = logit(p): the reward difference is calibrated. With
    p = 1 and m = 0 it is TRL's RewardTrainer loss `−log σ(r_c − r_r)`; with a margin it is TRL's
    `−log σ(r_c − r_r − m)` (Llama 2 §3.2.2), which is defined for hard labels only. Subtracting m in
    both terms of the soft loss moves its optimum off logit(p) (p = 0.75, m = 1: σ(r_c − r_r) = 0.856,
    not 0.75), so a margin on a pair with 0 < p < 1 is refused (ValueError) rather than trained.

    r_chosen, r_rejected: (B,); p_chosen: (B,) in [0, 1] or None (= 1); margin: (B,), scalar or None.
    Returns (B,).
    """
    diff = r_chosen - r_rejected
    m = torch.zeros_like(diff) if margin is None else torch.as_tensor(margin, dtype=diff.dtype,
                                                                       device=diff.device).expand_as(diff)
    if p_chosen is None:
        return -F.logsigmoid(diff - m)
    p = p_chosen.to(diff.dtype)
    if bool(((m != 0) & (p > 0) & (p < 1)).any()):
        raise ValueError("a Bradley-Terry margin is for hard labels (p_chosen 0 or 1); "
                         "with a soft p_chosen it makes the reward overconfident")
    # hard pairs with a margin: p ∈ {0, 1} keeps one term, each with the margin on the side that won
    return p * -F.logsigmoid(diff - m) + (1 - p) * -F.logsigmoid(-diff - m)


def center_rewards_penalty(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """(r_c + r_r)², per pair; mean-ing it times a coefficient gives TRL's `center_rewards_coefficient` term
    (Eisenstein et al. 2023, "Helping or Herding?"), which keeps rewards near zero. (B,), (B,) -> (B,)."""
    return (r_chosen + r_rejected) ** 2


def reward_normalization(rewards: torch.Tensor) -> tuple[float, float]:
    """Gain g and bias b so that g·r + b has mean 0 and std 1 over `rewards` (N,) (population std).

    g = 1/std(r), b = −mean(r)/std(r). A constant reward set (std 0) gets g = 1, b = −mean.
    """
    r = rewards.double()
    mean, std = r.mean().item(), r.std(unbiased=False).item()
    if std < 1e-12:
        return 1.0, -mean
    return 1.0 / std, -mean / std


# ---- DPO and variants ------------------------------------------------------------------------------------
# h = [log π(y_w|x) − log π_ref(y_w|x)] − [log π(y_l|x) − log π_ref(y_l|x)]  (Rafailov et al. 2023, eq. 7)
# Each variant maps (chosen_logratio, rejected_logratio, β, ε, lengths) -> per-pair loss (B,). For cDPO ε is
# the label-noise rate of each pair (a scalar label_smoothing, or 1 − p_chosen for soft AI labels); for
# robust DPO it is one flip rate for the whole dataset (a float), never a per-pair tensor.


def dpo_sigmoid(chosen_logratio: torch.Tensor, rejected_logratio: torch.Tensor, beta: float,
                eps: torch.Tensor | float = 0.0, **_) -> torch.Tensor:
    """DPO, with cDPO label smoothing when ε > 0 (Mitchell 2023, "A note on DPO with noisy preferences"):

        L = (1 − ε) · (−log σ(β h)) + ε · (−log σ(−β h))

    ε = 0 is plain DPO, −log σ(β h) (Rafailov et al. 2023, eq. 7), equal to TRL's loss_type="sigmoid".
    chosen_logratio, rejected_logratio: (B,) summed over response tokens; eps: scalar or (B,). Returns (B,).
    """
    h = chosen_logratio - rejected_logratio
    return (1 - eps) * -F.logsigmoid(beta * h) + eps * -F.logsigmoid(-beta * h)


def dpo_ipo(chosen_logratio: torch.Tensor, rejected_logratio: torch.Tensor, beta: float,
            eps: torch.Tensor | float = 0.0, *, chosen_len: torch.Tensor, rejected_len: torch.Tensor,
            **_) -> torch.Tensor:
    """IPO (Azar et al. 2023, eq. 17): (h̄ − 1/(2β))², where τ = β and h̄ uses log-ratios averaged per
    response token, as TRL does (agreed with the IPO authors; it makes β independent of length).

    chosen_len, rejected_len: (B,) response token counts. ε must be 0 (config validation refuses IPO with
    label smoothing or soft labels). Returns (B,).
    """
    h = chosen_logratio / chosen_len.clamp(min=1) - rejected_logratio / rejected_len.clamp(min=1)
    return (h - 1 / (2 * beta)) ** 2


def dpo_robust(chosen_logratio: torch.Tensor, rejected_logratio: torch.Tensor, beta: float,
               eps: float = 0.0, **_) -> torch.Tensor:
    """Robust DPO (Chowdhury et al. 2024, "Provably Robust DPO", eq. 10), an unbiased loss under a
    population label-flip rate ε < 1/2:

        L = [ (1 − ε) · (−log σ(β h)) − ε · (−log σ(−β h)) ] / (1 − 2ε)

    Equal to TRL's loss_type="robust" with label_smoothing=ε. ε is one number for the dataset: the loss
    scales the gradient at h = 0 by 1/(1 − 2ε) and, for ε > 0, falls without bound as h grows (its
    slope tends to −βε/(1 − 2ε)); the bias correction holds only in expectation over the flips. Used per
    pair with ε = 1 − p_chosen, the pairs nearest p = 0.5 would dominate (×50 at p = 0.51), so a tensor ε
    with more than one value is refused (ValueError); cDPO (`dpo_sigmoid`) is the per-pair loss.
    eps: a float in [0, 0.5). Returns (B,).
    """
    if isinstance(eps, torch.Tensor):
        if eps.numel() != 1:
            raise ValueError("robust DPO takes one flip rate ε for the dataset, not one per pair")
        eps = float(eps)
    if not 0.0 <= eps < 0.5:
        raise ValueError(f"robust DPO needs 0 <= ε < 0.5, got {eps}")
    h = chosen_logratio - rejected_logratio
    return ((1 - eps) * -F.logsigmoid(beta * h) - eps * -F.logsigmoid(-beta * h)) / (1 - 2 * eps)


def flip_rate_from_soft_labels(p_chosen: torch.Tensor) -> float:
    """The dataset's label-flip rate implied by its soft labels, ε̂ = mean(1 − p_chosen), for robust DPO's
    one ε (Chowdhury et al. 2024 treat ε as known; this is its plug-in estimate). If p_chosen is the
    calibrated probability that `chosen` really is the better response, 1 − p is the chance that this
    pair's order is flipped, and the mean is the expected share of flipped pairs. p_chosen: (N,) in
    [0, 1]. Returns a float in [0, 1]."""
    return float((1 - p_chosen.double()).mean())


DPO_LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "sigmoid": dpo_sigmoid,
    "cdpo": dpo_sigmoid,  # the same function; the name documents intent (label_smoothing > 0 expected)
    "ipo": dpo_ipo,
    "robust": dpo_robust,
}


def rpo_nll(chosen_logps: torch.Tensor, chosen_len: torch.Tensor) -> torch.Tensor:
    """The RPO term (Pang et al. 2024, "Iterative Reasoning Preference Optimization", arXiv 2404.19733,
    eq. 3; TRL's `rpo_alpha`): the negative log-likelihood of the chosen response per token,
    −log π(y_w|x) / |y_w|, added to the DPO loss with weight α. DPO only asks the chosen response to beat
    the rejected one; at small scale it can get there by making both unlikely, drifting into text that is
    neither (e.g. "Sure! I can help with that." and nothing else). The NLL keeps the chosen answers likely.

    chosen_logps: (B,) summed over response tokens; chosen_len: (B,) response token counts. Returns (B,).
    """
    return -chosen_logps / chosen_len.clamp(min=1)


def dpo_implicit_rewards(chosen_logratio: torch.Tensor, rejected_logratio: torch.Tensor,
                         beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Implicit rewards β·(log π − log π_ref) of chosen and rejected (Rafailov et al. 2023 §5). (B,) each."""
    return beta * chosen_logratio.detach(), beta * rejected_logratio.detach()


# ---- PPO for language models ---------------------------------------------------------------------------
# Huang et al. 2024, "The N Implementation Details of RLHF with PPO" (arXiv 2403.17031), reproduced in
# vwxyzjn/summarize_from_feedback_details/ppo.py. A response of R tokens is an episode of R actions; the
# trainer pads responses to (B, R) and passes `mask` (B, R) = 1 on real tokens (through the first EOS).


def truncate_after_eos(response_ids: torch.Tensor, eos_ids: list[int] | tuple[int, ...],
                       pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The EOS trick, part 1: keep each response up to and including its first EOS, pad the rest.

    response_ids: (B, R). Returns (ids (B, R) with pad after the first EOS, mask (B, R) of kept tokens,
    has_eos (B,) bool). A response with no EOS keeps all R tokens (it hit the length limit).
    """
    is_eos = torch.isin(response_ids, torch.as_tensor(list(eos_ids), device=response_ids.device))  # (B, R)
    has_eos = is_eos.any(-1)
    R = response_ids.size(1)
    first = torch.where(has_eos, is_eos.float().argmax(-1), torch.full_like(has_eos, R - 1, dtype=torch.long))
    mask = torch.arange(R, device=response_ids.device)[None] <= first[:, None]  # (B, R)
    return response_ids.masked_fill(~mask, pad_id), mask.long(), has_eos


def penalize_no_eos(scores: torch.Tensor, has_eos: torch.Tensor, no_eos_score: float) -> torch.Tensor:
    """The EOS trick, part 2: a response that never emitted EOS within the length limit gets the fixed
    score `no_eos_score` (−1 in Huang et al. 2024 §"EOS trick") instead of the reward model's.
    scores: (B,), has_eos: (B,) bool. Returns (B,)."""
    return torch.where(has_eos, scores, torch.full_like(scores, no_eos_score))


def kl_shaped_rewards(scores: torch.Tensor, logps: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor,
                      beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards with the KL penalty, and the score added at the last real token:

        r_t = −β · (log π(a_t|s_t) − log π_ref(a_t|s_t)) + [t = last] · score

    (Ziegler et al. 2019 eq. 2; Ouyang et al. 2022 eq. 2; Huang et al. 2024 detail 4.) The per-token KL
    estimate is the log-ratio k1 (unbiased; it can be negative per token).
    scores: (B,); logps, ref_logps, mask: (B, R). Returns (rewards (B, R), kl (B, R)), both 0 where mask is 0.
    """
    m = mask.to(logps.dtype)
    kl = (logps - ref_logps) * m  # (B, R)
    rewards = -beta * kl
    last = (mask.long().sum(-1) - 1).clamp(min=0)  # (B,) index of the last real token
    rewards = rewards.scatter_add(1, last[:, None], scores.to(rewards.dtype)[:, None])
    return rewards, kl


def gae_advantages(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
                   lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, eq. 16), right to left:

        δ_t = r_t + γ V(s_{t+1}) − V(s_t),   A_t = δ_t + γ λ A_{t+1},   returns_t = A_t + V(s_t)

    with V = 0 after the last real token (the episode ends at EOS or at the length limit).
    rewards, values, mask: (B, R). Returns (advantages (B, R), returns (B, R)), 0 where mask is 0.
    """
    m = mask.to(values.dtype)
    values = values * m
    R = rewards.size(1)
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(R)):
        next_v = values[:, t + 1] if t + 1 < R else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        last = (delta + gamma * lam * last) * m[:, t]
        adv[:, t] = last
    return adv, (adv + values) * m


def whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """Masked whitening (x − mean) / sqrt(var + 1e-8) over the real tokens, with the unbiased variance as in
    summarize_from_feedback_details `masked_whiten`. shift_mean=False keeps the mean (used for rewards).
    values, mask: (B, R). Returns (B, R), 0 where mask is 0."""
    m = mask.to(values.dtype)
    n = m.sum()
    mean = (values * m).sum() / n
    var = (((values - mean) * m) ** 2).sum() / (n - 1).clamp(min=1)
    out = (values - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * m


def ppo_policy_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor,
                    clip: float = 0.2) -> torch.Tensor:
    """PPO's clipped surrogate, per token (Schulman et al. 2017, eq. 7), as a loss to minimise:

        ρ = exp(log π − log π_old),   L = max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε))

    logps, old_logps, advantages: (B, R) (or (B,) for sequence-level ratios). Returns the same shape;
    the caller masks and averages."""
    ratio = torch.exp(logps - old_logps)
    return torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - clip, 1 + clip))


def ppo_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                   clip: float = 0.2) -> torch.Tensor:
    """Clipped value loss, per token (Huang et al. 2024 detail "value function clipping"; OpenAI baselines):

        L = ½ · max((V − G)², (V_old + clip(V − V_old, −ε, ε) − G)²)

    values, old_values, returns: (B, R). Returns (B, R); the trainer multiplies the masked mean by vf_coef."""
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    return 0.5 * torch.max((values - returns) ** 2, (clipped - returns) ** 2)


def approx_kl(logps: torch.Tensor, old_logps: torch.Tensor) -> torch.Tensor:
    """k2 estimate ½ (log π − log π_old)² of KL(π_old ‖ π) per token, as logged by summarize_from_feedback_
    details (http://joschu.net/blog/kl-approx.html). (B, R) -> (B, R)."""
    return 0.5 * (logps - old_logps) ** 2


def clip_fraction(logps: torch.Tensor, old_logps: torch.Tensor, clip: float = 0.2) -> torch.Tensor:
    """1 where the ratio left [1−ε, 1+ε] (PPO's clipfrac), else 0. (B, R) -> (B, R) float."""
    return ((logps - old_logps).exp().sub(1).abs() > clip).float()


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy −Σ p log p of softmax(logits) over the last dim. (..., V) -> (...) in fp32."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def adaptive_kl_beta(beta: float, kl: float, target: float, horizon: int, n_steps: int) -> float:
    """Adaptive KL controller (Ziegler et al. 2019 §2.2):

        e = clip((KL − KL_target) / KL_target, −0.2, 0.2),   β ← β · (1 + e · n / horizon)

    kl: the mean sequence KL of the batch; n_steps: episodes in the batch. Returns the new β."""
    err = min(max((kl - target) / target, -0.2), 0.2)
    return beta * (1 + err * n_steps / horizon)


# ---- RLOO (Ahmadian et al. 2024, arXiv 2402.14740; TRL 1.16 RLOOTrainer) --------------------------------


def rloo_advantages(scores: torch.Tensor, seq_kl: torch.Tensor, k: int, beta: float) -> torch.Tensor:
    """Leave-one-out advantages with the sequence-level KL in the reward (TRL 1.16 rloo_trainer.py
    `_generate_and_score_completions`, the lines after "Include the KL penalty in the reward"):

        r_i = score_i − β · Σ_t (log π_old − log π_ref),   A_i = r_i − 1/(K−1) Σ_{j≠i} r_j

    scores, seq_kl: (P·K,), the K samples of each prompt contiguous. Returns (P·K,)."""
    r = (scores - beta * seq_kl).view(-1, k)  # (P, K)
    baseline = (r.sum(-1, keepdim=True) - r) / (k - 1)
    return (r - baseline).view(-1)


def rloo_policy_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor,
                     clip: float = 0.2) -> torch.Tensor:
    """RLOO's clipped loss on sequence-level ratios (TRL 1.16 `RLOOTrainer._compute_loss`):

        ρ = exp(Σ_t log π − Σ_t log π_old),   L = −min(ρ·A, clip(ρ, 1−ε, 1+ε)·A)

    logps, old_logps: (B,) summed over response tokens; advantages: (B,). Returns (B,) (TRL: its mean)."""
    return ppo_policy_loss(logps, old_logps, advantages, clip)
