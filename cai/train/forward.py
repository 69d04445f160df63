"""The training forward passes: summed completion log-probs of a causal LM, last-token rewards of a
sequence classifier, PPO/RLOO's per-token log-probs and values over a rollout batch, plus the length
buckets that batch them.

Log-probs are computed by `CompletionLogps`, a thin module around a causal LM that runs the decoder once
and applies the LM head only at the positions whose next token is scored: the vocabulary-sized logits of
prompt and padding positions are never built (for DPO that is most of the memory TRL spends). The module
is what accelerate wraps (DDP/FSDP), so gradient synchronisation sees an ordinary forward.
"""
from __future__ import annotations

import torch
from torch import nn

from cai.train import losses, packing

# A 4D mask is taken as final by transformers' mask builders, so a packed forward builds no (T, T) mask;
# the blocks passed alongside it decide what attends to what.
_NO_MASK = torch.ones(1, 1, 1, 1, dtype=torch.bool)


def _inner_model(model: nn.Module) -> nn.Module:
    """The transformers model under a peft wrapper (LoRA layers are injected in place, so they stay active)."""
    from peft import PeftModel
    return model.get_base_model() if isinstance(model, PeftModel) else model


def packed_hidden(decoder: nn.Module, p: packing.Packed) -> torch.Tensor:
    """Last hidden states (T, H) of a packed row, attention confined to its blocks (`packing`)."""
    packing.install(decoder.config._attn_implementation)
    return decoder(input_ids=p.input_ids, position_ids=p.position_ids, attention_mask=_NO_MASK.to(p.input_ids.device),
                   use_cache=False, cai_blocks=p.blocks).last_hidden_state[0]


def length_buckets(lengths: list[int], max_waste: float = 0.15) -> list[list[int]]:
    """Row indices grouped by length (ascending) so that padding each group to its longest row wastes at
    most `max_waste` of its real tokens. Rows are independent, so forwarding them in such groups gives the
    same numbers as one padded batch with less compute."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    real = 0
    for i in order:
        n = lengths[i]
        if groups and (len(groups[-1]) + 1) * n <= (1 + max_waste) * (real + n):
            groups[-1].append(i)
            real += n
        else:
            groups.append([i])
            real = n
    return groups


class CompletionLogps(nn.Module):
    """Summed log-probs of the completion tokens of each row, with the LM head applied only where needed.

    forward(input_ids (B, T), attention_mask (B, T) or None, completion_mask (B, T)[, position_ids])
      -> (logps (B,), n_tokens (B,)); token t is scored when completion_mask[t] == 1 (t >= 1).
    Rows are run in length buckets (one module call, so DDP sees one forward). Models with logit
    soft-capping/scaling fall back to the full forward.
    """

    bucketed = True  # False under FSDP (`distributed.wrap_layers`): each process must run every layer equally often

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids=None, attention_mask=None, completion_mask=None, position_ids=None,
                packed: packing.Packed | None = None):
        if packed is not None:  # one padding-free row: (rows,) sums and counts
            return self._packed(packed)
        if attention_mask is None or not self.bucketed:  # packed rows (block-causal from position_ids), or FSDP
            groups = [list(range(input_ids.size(0)))]
        else:
            groups = length_buckets(attention_mask.sum(-1).tolist())
        sums = torch.zeros(input_ids.size(0), dtype=torch.float32, device=input_ids.device)
        counts = completion_mask[:, 1:].sum(-1)
        for g in groups:
            rows = torch.tensor(g, device=input_ids.device)
            width = int(attention_mask[rows].sum(-1).max()) if attention_mask is not None else input_ids.size(1)
            parts = [None if t is None else t[rows, :width]
                     for t in (input_ids, attention_mask, completion_mask, position_ids)]
            sums = sums.index_copy(0, rows, self._group(*parts))
        return sums, counts

    def _packed(self, p: packing.Packed) -> tuple[torch.Tensor, torch.Tensor]:
        inner = _inner_model(self.model)
        hidden = packed_hidden(inner.get_decoder(), p)  # (T, H)
        logits = inner.get_output_embeddings()(hidden[p.src])  # (N, V)
        tok_logps = losses.token_logps(logits, p.tgt)  # (N,)
        sums = torch.zeros(p.rows, dtype=tok_logps.dtype, device=tok_logps.device).index_add(0, p.row, tok_logps)
        return sums, torch.bincount(p.row, minlength=p.rows)  # (rows,), (rows,)

    def _group(self, input_ids, attention_mask, completion_mask, position_ids) -> torch.Tensor:
        inner = _inner_model(self.model)
        target_mask = completion_mask[:, 1:].bool()  # (b, t-1): position t predicts token t+1
        targets = input_ids[:, 1:][target_mask]  # (N,)
        decoder = inner.get_decoder() if hasattr(inner, "get_decoder") else None
        fused = decoder is not None and getattr(inner.config, "final_logit_softcapping", None) is None \
            and getattr(inner.config, "logit_scale", None) is None
        if fused:
            hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             use_cache=False).last_hidden_state  # (b, t, H)
            logits = inner.get_output_embeddings()(hidden[:, :-1][target_mask])  # (N, V)
        else:
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                use_cache=False).logits[:, :-1][target_mask]  # (N, V)
        tok_logps = losses.token_logps(logits, targets)  # (N,)
        rows = target_mask.nonzero()[:, 0]  # (N,) row of each scored token
        return torch.zeros(input_ids.size(0), dtype=tok_logps.dtype, device=tok_logps.device).index_add(
            0, rows, tok_logps)  # (b,)


class LastTokenReward(nn.Module):
    """Scalar reward of each row, read at its last real token (attention mask, right padding).

    Reading by mask rather than by pad id matters for chat models whose pad token is the end-of-turn
    token. Rows run in length buckets. forward(input_ids (B, T), attention_mask (B, T)) -> (B,) rewards.
    """

    bucketed = True  # as CompletionLogps.bucketed

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids=None, attention_mask=None, packed: packing.Packed | None = None):
        if packed is not None:  # one padding-free row: (rows,) rewards at each row's last token
            inner = _inner_model(self.model)
            hidden = packed_hidden(getattr(inner, inner.base_model_prefix), packed)  # (T, H)
            return inner.score(hidden[packed.last]).squeeze(-1).float()
        lengths = attention_mask.sum(-1)
        out = torch.zeros(input_ids.size(0), dtype=torch.float32, device=input_ids.device)
        for g in length_buckets(lengths.tolist()) if self.bucketed else [list(range(input_ids.size(0)))]:
            rows = torch.tensor(g, device=input_ids.device)
            width = int(lengths[rows].max())
            out = out.index_copy(0, rows, self._group(input_ids[rows, :width], attention_mask[rows, :width]))
        return out

    def _group(self, input_ids, attention_mask):
        inner = _inner_model(self.model)
        base = getattr(inner, inner.base_model_prefix, None)
        head = getattr(inner, "score", None)
        last = attention_mask.sum(-1) - 1  # (b,)
        rows = torch.arange(input_ids.size(0), device=input_ids.device)
        if base is None or head is None:
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
            return (logits.squeeze(-1) if logits.dim() == 2 else logits[rows, last, 0]).float()
        hidden = base(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        return head(hidden[rows, last]).squeeze(-1).float()  # (b,)


# ---- PPO/RLOO: per-token log-probs and values over a rollout batch -----------------------------------


def _positions(attention_mask: torch.Tensor) -> torch.Tensor:
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)  # left padding: real tokens start at position 0


def policy_logps(model: nn.Module, input_ids, attention_mask, P: int, R: int, temperature: float,
                 with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Log-probs (B, R) of the response tokens with logits / temperature (identical to the rollout's
    sampling distribution), and optionally the entropy (B, R) at that temperature and the raw
    (temperature 1) log-probs (B, R) that engines report. Only the R response positions go through the LM head."""
    inner = _inner_model(model)
    hidden = inner.get_decoder()(input_ids=input_ids, attention_mask=attention_mask,
                                 position_ids=_positions(attention_mask), use_cache=False).last_hidden_state
    logits = inner.get_output_embeddings()(hidden[:, P - 1:P - 1 + R]).float()  # (B, R, V)
    targets = input_ids[:, P:P + R]
    logps = losses.token_logps(logits / temperature, targets)  # (B, R)
    if not with_entropy:
        return logps, None, None
    with torch.no_grad():
        ent = losses.entropy_from_logits(logits / temperature)
        raw = losses.token_logps(logits, targets)
    return logps, ent, raw


class ValueHead(nn.Module):
    """The value model: a sequence classifier's backbone and scalar head applied at every position.
    forward(input_ids, attention_mask, P, R) -> (B, R): V(s_t) read where response token t is predicted."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, P: int, R: int) -> torch.Tensor:
        inner = _inner_model(self.model)
        base = getattr(inner, inner.base_model_prefix)
        hidden = base(input_ids=input_ids, attention_mask=attention_mask, position_ids=_positions(attention_mask),
                      use_cache=False).last_hidden_state
        return inner.score(hidden[:, P - 1:P - 1 + R]).squeeze(-1).float()  # (B, R)


class PolicyValue(nn.Module):
    """Policy and (optional) value model as one module, so accelerate wraps, checkpoints and optimises
    them together (separate networks: the value model is not a head on the policy, as in Huang et al.)."""

    def __init__(self, policy: nn.Module, value: nn.Module | None):
        super().__init__()
        self.policy = policy
        self.value = ValueHead(value) if value is not None else None

    def forward(self, input_ids, attention_mask, P: int, R: int, temperature: float, with_entropy: bool = False):
        logps, ent, raw = policy_logps(self.policy, input_ids, attention_mask, P, R, temperature, with_entropy)
        values = self.value(input_ids, attention_mask, P, R) if self.value is not None else None
        return logps, ent, raw, values
