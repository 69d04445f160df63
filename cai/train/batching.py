"""Batching for the trainers: which examples form global batch `step`, each process's micro-batches of
similar length, and the padded tensors of SFT conversations and preference pairs."""
from __future__ import annotations

import random

from cai.errors import InputError
from cai.train.data import PrefExample, SFTExample


def step_indices(n: int, batch_size: int, step: int, seed: int) -> list[int]:
    """The example indices of global batch `step` (0-based): epoch-wise seeded permutations, last partial
    batch dropped. A pure function of (n, batch_size, step, seed), so resuming needs only the step."""
    per_epoch = n // batch_size
    epoch, pos = divmod(step, per_epoch)
    perm = list(range(n))
    random.Random(seed * 100_003 + epoch).shuffle(perm)
    return perm[pos * batch_size:(pos + 1) * batch_size]


def shard_micro_batches(indices: list[int], lengths: list[int], rank: int, world: int,
                        micro: int) -> list[list[int]]:
    """This process's share of a global batch, cut into micro-batches of similar length (less padding).
    Every process gets the same number of examples, so per-example means stay exact across processes."""
    if len(indices) % world:
        raise InputError(f"batch_size {len(indices)} is not divisible by the {world} processes",
                         field="run.batch_size")
    share = indices[rank * len(indices) // world:(rank + 1) * len(indices) // world]
    share = sorted(share, key=lambda i: lengths[i])
    return [share[i:i + micro] for i in range(0, len(share), micro)]


def pad_right(seqs: list[list[int]], value: int):
    """(B, T) long tensor, right-padded to the longest sequence."""
    import torch
    width = max(len(s) for s in seqs)
    out = torch.full((len(seqs), width), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def collate_pairs(examples: list[PrefExample], pad_id: int) -> dict:
    """Chosen then rejected in one (2B, T) batch: one forward for both halves, as TRL does."""
    import torch
    ids = [e.chosen_ids for e in examples] + [e.rejected_ids for e in examples]
    masks = [e.chosen_mask for e in examples] + [e.rejected_mask for e in examples]
    return {
        "input_ids": pad_right(ids, pad_id),  # (2B, T)
        "attention_mask": pad_right([[1] * len(s) for s in ids], 0),  # (2B, T)
        "completion_mask": pad_right(masks, 0),  # (2B, T)
        "p_chosen": torch.tensor([e.p_chosen for e in examples], dtype=torch.float32),  # (B,)
    }


def collate_sft(examples: list[SFTExample], pad_id: int) -> dict:
    batch = {
        "input_ids": pad_right([e.input_ids for e in examples], pad_id),  # (B, T)
        "attention_mask": pad_right([[1] * len(e.input_ids) for e in examples], 0),  # (B, T)
        "completion_mask": pad_right([e.labels_mask for e in examples], 0),  # (B, T)
    }
    if hasattr(examples[0], "position_ids"):  # packed rows: restarted positions give block-causal attention
        width = batch["input_ids"].size(1)
        batch["position_ids"] = pad_right([e.position_ids + list(range(width - len(e.position_ids)))
                                           for e in examples], 0)
        batch["attention_mask"] = None  # transformers derives the block-diagonal mask from position_ids
    return batch


def pack_sft(examples: list[SFTExample], max_length: int) -> list[SFTExample]:
    """Greedy first-fit packing of whole examples into rows of at most max_length tokens. Each packed row
    carries restarted position ids (stored in `extra`) so attention stays within each example."""
    rows: list[list[SFTExample]] = []
    space: list[int] = []
    for e in sorted(examples, key=lambda e: -len(e.input_ids)):
        for i, s in enumerate(space):
            if len(e.input_ids) <= s:
                rows[i].append(e)
                space[i] -= len(e.input_ids)
                break
        else:
            rows.append([e])
            space.append(max_length - len(e.input_ids))
    out = []
    for group in rows:
        ex = SFTExample([t for e in group for t in e.input_ids], [t for e in group for t in e.labels_mask])
        ex.position_ids = [p for e in group for p in range(len(e.input_ids))]  # type: ignore[attr-defined]
        out.append(ex)
    return out
