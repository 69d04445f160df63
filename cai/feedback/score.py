"""d-RLAIF (Lee et al. 2023 §3.2): the judge rates one response from min to max; the reward is the
probability-weighted mean score, rescaled to [-1, 1]. PPO can call `score_responses` as its reward.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cai.constitution.templates import score_range
from cai.engine.base import Scored
from cai.errors import InputError
from cai.feedback import soft_labels
from cai.feedback.judge import decoded_vocab
from cai.prompts import render_score


@dataclass(frozen=True)
class ScoreTokens:
    """Token sequences of each score, and the single-token spellings (`7`, ` 7`) of one-token scores."""

    seqs: dict[int, tuple[int, ...]]
    variants: dict[int, tuple[int, ...]]

    @classmethod
    def from_tokenizer(cls, tokenizer, lo: int, hi: int) -> "ScoreTokens":
        decoded = decoded_vocab(tokenizer)
        seqs, variants = {}, {}
        for s in range(lo, hi + 1):
            seqs[s] = tuple(tokenizer(str(s), add_special_tokens=False)["input_ids"])
            if len(seqs[s]) == 1:
                variants[s] = tuple(i for i, t in enumerate(decoded) if t.strip() == str(s))
        if not variants:
            raise InputError(f"the judge's tokenizer spells no score in {lo}..{hi} as one token", field="judge")
        return cls(seqs, variants)


def score_probs(top: dict[int, float], multi: dict[int, float], tokens: ScoreTokens, extra: dict[int, float]
                ) -> dict[int, float]:
    """p(each score): one-token scores sum their spellings' probabilities (from the top-k, or scored exactly
    in `extra`); multi-token scores come from `multi` (exact sequence probabilities); prefixes then give
    up their extensions' mass (`soft_labels.score_distribution`)."""
    lp = {**extra, **top}
    seq_p = {s: sum(math.exp(lp[t]) for t in ids if t in lp) for s, ids in tokens.variants.items()}
    seq_p.update(multi)
    return soft_labels.score_distribution(seq_p, tokens.seqs)


def score_responses(engine, constitution, prompts: Sequence[Any], responses: Sequence[str], *, top_k: int = 20
                    ) -> list[Scored[float]]:
    """d-RLAIF rewards in [-1, 1] for each (prompt, response), in one engine batch: `Scored(reward)`, or
    `Scored(error=...)` for a row whose request failed (an engine error, or a rating prompt longer than the
    judge's context), as the engines report it; never a silent None."""

    lo, hi = score_range(constitution)
    tokens = ScoreTokens.from_tokenizer(engine.tokenizer, lo, hi)
    ids = [engine.format_chat(render_score(constitution, p, r), continue_final_message=True)
           for p, r in zip(prompts, responses)]
    tops = engine.top_logprobs(ids, k=top_k)
    # Exact scores for what the top-k cannot give: multi-token scores, and one-token scores it missed.
    asks = [(i, s, list(tokens.seqs[s])) for i, top in enumerate(tops) if top.ok
            for s in tokens.seqs if len(tokens.seqs[s]) > 1 or tokens.seqs[s][0] not in top.value]
    scored = engine.score_continuations([ids[i] for i, _, _ in asks], [t for _, _, t in asks]) if asks else []
    multi: dict[int, dict[int, float]] = {}
    extra: dict[int, dict[int, float]] = {}
    for (i, s, t), v in zip(asks, scored):
        if not v.ok:
            continue
        if len(t) > 1:
            multi.setdefault(i, {})[s] = math.exp(sum(v.value))
        else:
            extra.setdefault(i, {})[t[0]] = v.value[0]
    out: list[Scored[float]] = []
    for i, top in enumerate(tops):
        if not top.ok:
            out.append(Scored(error=top.error))
            continue
        reward, _ = soft_labels.expected_score(score_probs(top.value, multi.get(i, {}), tokens, extra.get(i, {})),
                                               lo, hi)
        out.append(Scored(reward))
    return out
