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
    """Bradley-Terry loss on soft labels, per pair.

        L = −[ p · log σ(r_c − r_r − m) + (1 − p) · log σ(r_r − r_c − m) ]

    (Bradley & Terry 1952; Ouyang et al. 2022 eq. 1; soft targets as in Bai et al. 2022 §4 / Lee et al.
    2023). With p = 1 (the default) and m = 0 it is the standard `−log σ(r_c − r_r)` of TRL's RewardTrainer;
    with p = 1 and a margin it is TRL's `−log σ(r_c − r_r − m)` (Llama 2 §3.2.2).

    r_chosen, r_rejected: (B,); p_chosen: (B,) in [0, 1] or None; margin: (B,), scalar or None. Returns (B,).
    """
    diff = r_chosen - r_rejected
    m = 0.0 if margin is None else margin
    loss = -F.logsigmoid(diff - m)
    if p_chosen is not None:
        p = p_chosen.to(diff.dtype)
        loss = p * loss + (1 - p) * -F.logsigmoid(-diff - m)
    return loss


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
# Each variant maps (chosen_logratio, rejected_logratio, β, ε, lengths) -> per-pair loss (B,), where ε is
# the per-pair label-noise rate (a scalar label_smoothing, or 1 − p_chosen for soft AI labels).


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
               eps: torch.Tensor | float = 0.0, **_) -> torch.Tensor:
    """Robust DPO (Chowdhury et al. 2024, eq. 10), an unbiased loss under label-flip rate ε < 1/2:

        L = [ (1 − ε) · (−log σ(β h)) − ε · (−log σ(−β h)) ] / (1 − 2ε)

    Equal to TRL's loss_type="robust" with label_smoothing=ε. Returns (B,).
    """
    h = chosen_logratio - rejected_logratio
    return ((1 - eps) * -F.logsigmoid(beta * h) - eps * -F.logsigmoid(-beta * h)) / (1 - 2 * eps)


DPO_LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "sigmoid": dpo_sigmoid,
    "cdpo": dpo_sigmoid,  # the same function; the name documents intent (label_smoothing > 0 expected)
    "ipo": dpo_ipo,
    "robust": dpo_robust,
}


def dpo_implicit_rewards(chosen_logratio: torch.Tensor, rejected_logratio: torch.Tensor,
                         beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Implicit rewards β·(log π − log π_ref) of chosen and rejected (Rafailov et al. 2023 §5). (B,) each."""
    return beta * chosen_logratio.detach(), beta * rejected_logratio.detach()
