"""Padding-free packed batches: several examples (or preference pairs) concatenated into one row of at most
`run.tokens_per_batch` tokens, with no padding, position ids restarting per example, and attention confined
to each example by running it block by block (`packed_attention`).

A preference pair is packed with its prompt shared (Wang and Hegde 2024, arXiv 2410.20305): the tokens that
chosen and rejected have in common (the prompt, and any identical start of the responses) are run once,
laid out as [prefix, chosen rest, rejected rest]; chosen attends to prefix + chosen, rejected to prefix +
rejected, and rejected's position ids continue from the prefix's end. Under causal attention the hidden
states of the prefix do not depend on what follows it, so every log-prob and reward equals the unshared one.

Each example's tokens keep their original position ids, so RoPE sees exactly what it sees in a padded
batch. The attention blocks are computed with SDPA per block (causal, or a prefix + causal mask for a
rejected response): the cost is the sum of the blocks' squared lengths, not the packed row's.
"""
from __future__ import annotations

from dataclasses import dataclass

from cai.errors import InputError
from cai.train.data import PrefExample, SFTExample

# ---- which examples go into which forward ---------------------------------------------------------------


def sft_tokens(e: SFTExample) -> int:
    return len(e.input_ids)


def shared_prefix(e: PrefExample) -> int:
    """Tokens that chosen and rejected share, capped so each keeps at least one token of its own (the
    last token carries the RM's reward, and its predecessor scores the response's first token)."""
    a, b = e.chosen_ids, e.rejected_ids
    n, cap = 0, min(len(a), len(b)) - 1
    while n < cap and a[n] == b[n]:
        n += 1
    return n


def pair_tokens(e: PrefExample, share_prompt: bool = True) -> int:
    """Tokens one packed pair takes: the shared prefix once, then both rests."""
    total = len(e.chosen_ids) + len(e.rejected_ids)
    return total - shared_prefix(e) if share_prompt else total


def token_micro_batches(indices: list[int], tokens: list[int], rank: int, world: int,
                        tokens_per_batch: int) -> list[list[int]]:
    """This process's share of a global batch, cut into packed forwards of at most `tokens_per_batch`
    tokens (an example longer than that forms its own). Every process gets the same number of examples,
    so per-example means stay exact across processes; shortest first, as with padded micro-batches."""
    if len(indices) % world:
        raise InputError(f"batch_size {len(indices)} is not divisible by the {world} processes",
                         field="run.batch_size")
    share = sorted(indices[rank * len(indices) // world:(rank + 1) * len(indices) // world], key=lambda i: tokens[i])
    out: list[list[int]] = []
    used = 0
    for i in share:
        if out and used + tokens[i] <= tokens_per_batch:
            out[-1].append(i)
            used += tokens[i]
        else:
            out.append([i])
            used = tokens[i]
    return out


# ---- the packed row ---------------------------------------------------------------------------------------


@dataclass
class Block:
    """Queries [q0, q1) of the packed row attend to keys `kv` (index ranges, in order). `prefix` = 0 is
    plain causal attention over kv == [(q0, q1)]; `prefix` = P > 0 means the first kv range is a shared
    prefix of P tokens that every query sees, followed by the queries' own keys, causal."""
    q0: int
    q1: int
    kv: tuple[tuple[int, int], ...]
    prefix: int = 0


@dataclass
class Packed:
    """One padding-free forward. Tensors are (1, T) or (N,); `rows` output rows (examples; for pairs all
    chosen, then all rejected, as in the padded (2B, T) batch).

    input_ids, position_ids: (1, T) the packed row.
    src: (N,) index of the hidden state that predicts each scored token; tgt: (N,) that token's id;
    row: (N,) the output row it belongs to. last: (rows,) index of each row's last token (RM rewards).
    real_tokens: tokens of the unpacked sequences (prompt counted per response), for throughput figures."""
    input_ids: object
    position_ids: object
    blocks: list[Block]
    src: object
    tgt: object
    row: object
    last: object
    rows: int
    real_tokens: int

    def to(self, device) -> Packed:
        t = {k: getattr(self, k).to(device) for k in ("input_ids", "position_ids", "src", "tgt", "row", "last")}
        return Packed(**t, blocks=self.blocks, rows=self.rows, real_tokens=self.real_tokens)


class _Builder:
    def __init__(self):
        self.ids: list[int] = []
        self.pos: list[int] = []
        self.blocks: list[Block] = []
        self.src: list[int] = []
        self.tgt: list[int] = []
        self.row: list[int] = []

    def score(self, where: list[int], ids: list[int], mask: list[int], row: int) -> None:
        """Score token t (t >= 1, mask[t] == 1) of a sequence whose token s sits at packed index where[s]."""
        for t in range(1, len(ids)):
            if mask[t]:
                self.src.append(where[t - 1])
                self.tgt.append(ids[t])
                self.row.append(row)

    def add(self, ids: list[int], positions: list[int]) -> list[int]:
        start = len(self.ids)
        self.ids += ids
        self.pos += positions
        return list(range(start, len(self.ids)))

    def build(self, last: list[int], rows: int, real_tokens: int) -> Packed:
        import torch
        long = lambda x: torch.tensor(x, dtype=torch.long)  # noqa: E731
        return Packed(long([self.ids]), long([self.pos]), self.blocks, long(self.src), long(self.tgt),
                      long(self.row), long(last), rows, real_tokens)


def pack_sft(examples: list[SFTExample]) -> Packed:
    """SFT examples back to back, each its own causal block; the assistant tokens are scored."""
    b = _Builder()
    last = []
    for r, e in enumerate(examples):
        where = b.add(e.input_ids, list(range(len(e.input_ids))))
        b.blocks.append(Block(where[0], where[-1] + 1, ((where[0], where[-1] + 1),)))
        b.score(where, e.input_ids, e.labels_mask, r)
        last.append(where[-1])
    return b.build(last, len(examples), sum(len(e.input_ids) for e in examples))


def pack_pairs(examples: list[PrefExample], share_prompt: bool = True) -> Packed:
    """Preference pairs laid out as [shared prefix, chosen rest, rejected rest] (or, unshared, chosen then
    rejected as two causal blocks). Rows 0..b-1 are the chosen responses, b..2b-1 the rejected ones."""
    b = _Builder()
    n = len(examples)
    last = [0] * (2 * n)
    for r, e in enumerate(examples):
        c, j = e.chosen_ids, e.rejected_ids
        L = shared_prefix(e) if share_prompt else 0
        w_pre = b.add(c[:L], list(range(L)))
        w_c = w_pre + b.add(c[L:], list(range(L, len(c))))
        w_r = w_pre + b.add(j[L:], list(range(L, len(j))))
        s, cut, end = w_c[0], w_c[-1] + 1, w_r[-1] + 1
        b.blocks.append(Block(s, cut, ((s, cut),)))  # prefix + chosen: causal
        if L:  # rejected sees the whole prefix, then itself causally
            b.blocks.append(Block(cut, end, ((s, s + L), (cut, end)), prefix=L))
        else:
            b.blocks.append(Block(cut, end, ((cut, end),)))
        b.score(w_c, c, e.chosen_mask, r)
        b.score(w_r, j, e.rejected_mask, n + r)
        last[r], last[n + r] = w_c[-1], w_r[-1]
    return b.build(last, 2 * n, sum(len(e.chosen_ids) + len(e.rejected_ids) for e in examples))


# ---- attention confined to the blocks -------------------------------------------------------------------


def packed_attention(module, query, key, value, blocks: list[Block], scaling=None, dropout: float = 0.0):
    """Attention of a packed row, block by block: query (1, H, T, D), key/value (1, KVH, T, D) ->
    (1, T, H, D), the layout transformers' attention functions return. Each block is one SDPA call (causal
    kernel for plain blocks, a boolean prefix + causal mask for a rejected response)."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    outs, masks = [], {}
    for blk in blocks:
        q = query[:, :, blk.q0:blk.q1]
        if len(blk.kv) == 1:
            a, z = blk.kv[0]
            k, v, mask = key[:, :, a:z], value[:, :, a:z], None
        else:
            k = torch.cat([key[:, :, a:z] for a, z in blk.kv], dim=2)
            v = torch.cat([value[:, :, a:z] for a, z in blk.kv], dim=2)
            n = blk.q1 - blk.q0
            mask = masks.get((blk.prefix, n))
            if mask is None:  # (1, 1, n, P + n): all of the prefix, then causal over the block's own keys
                own = torch.ones(n, n, dtype=torch.bool, device=query.device).tril()
                mask = torch.cat([torch.ones(n, blk.prefix, dtype=torch.bool, device=query.device), own], 1)[None, None]
                masks[(blk.prefix, n)] = mask
        out, _ = sdpa_attention_forward(module, q, k, v, mask, dropout=dropout, scaling=scaling,
                                        is_causal=mask is None)
        outs.append(out)  # (1, n, H, D)
    return torch.cat(outs, dim=1)


_INSTALLED: set[str] = set()


def install(implementation: str) -> None:
    """Route the model's attention implementation through `packed_attention` when a forward passes
    `cai_blocks=`; any other call (padded batches, generation) reaches the original function unchanged."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    if implementation in _INSTALLED:
        return
    if implementation not in ("sdpa", "eager"):
        raise InputError(f"packed batches need sdpa or eager attention, not {implementation!r}",
                         field="run.tokens_per_batch")
    original = ALL_ATTENTION_FUNCTIONS[implementation]

    def attention(module, query, key, value, attention_mask, *args, cai_blocks=None, **kwargs):
        if cai_blocks is None:
            return original(module, query, key, value, attention_mask, *args, **kwargs)
        return packed_attention(module, query, key, value, cai_blocks, scaling=kwargs.get("scaling"),
                                dropout=kwargs.get("dropout", 0.0)), None

    ALL_ATTENTION_FUNCTIONS[implementation] = attention
    _INSTALLED.add(implementation)
