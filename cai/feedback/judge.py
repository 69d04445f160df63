"""The judge: renders comparisons, fits them into the context, and scores them in one engine batch.

A comparison of responses r1, r2 becomes 2·k prompts (both orders × k principles). Every prompt of a
batch goes to the engine together as next-token top log-probs (`max_tokens=1`); the conversation comes
first in the prompt, so with prefix caching the two orders share it. The label math is in `soft_labels.py`.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from cai.constitution import PrincipleSampler
from cai.constitution.templates import option_letters
from cai.engine import SamplingParams
from cai.engine.base import Scored
from cai.errors import InputError
from cai.feedback import soft_labels
from cai.feedback.config import LabelConfig
from cai.prompts import render_compare, render_compare_cot
from cai.stage import request_seed


@functools.lru_cache(maxsize=4)
def decoded_vocab(tokenizer) -> tuple[str, ...]:
    return tuple(tokenizer.batch_decode([[i] for i in range(len(tokenizer))]))


@dataclass(frozen=True)
class OptionTokens:
    """Token ids of the two option letters: all spelling variants, and the canonical one that follows "("."""

    letters: tuple[str, str]
    variants: tuple[tuple[int, ...], tuple[int, ...]]
    canonical: tuple[int, int]

    @classmethod
    def from_tokenizer(cls, tokenizer, letters: tuple[str, str]) -> "OptionTokens":
        decoded = decoded_vocab(tokenizer)
        variants, canonical = [], []
        for letter in letters:
            ids = tuple(soft_labels.option_variants(decoded, letter))
            enc = tokenizer(letter, add_special_tokens=False)["input_ids"]
            if not ids or len(enc) != 1:
                raise InputError(f"the judge's tokenizer has no single token for option letter {letter!r} "
                                 f"(it encodes as {len(enc)} tokens), so p({letter}) cannot be read from "
                                 "next-token log-probs; use another judge or other `templates.options`",
                                 field="judge")
            variants.append(ids)
            canonical.append(enc[0])
        return cls(tuple(letters), tuple(variants), tuple(canonical))


@dataclass
class Comparison:
    """One pair to judge. p values are p(response 1 better)-oriented after `judge_comparisons`."""

    key: str
    prompt: Any  # str | list of messages
    r1: str
    r2: str
    principles: list = field(default_factory=list)
    # filled in by the judge
    truncated: bool = False
    p_ab: float | None = None
    p_ba: float | None = None
    mass_outside: float | None = None
    floored: bool = False
    rationale: str = ""
    rationale_ba: str = ""
    error: str | None = None


class Judge:
    """Scores `Comparison`s with an engine under a constitution and a `LabelConfig`."""

    def __init__(self, engine, constitution, config: LabelConfig | None = None):

        self.engine, self.c, self.cfg = engine, constitution, config or LabelConfig()
        if not constitution.comparisons:
            raise InputError("the constitution has no comparison principles", field="comparisons",
                             file=getattr(constitution, "source_path", None))
        self.options = OptionTokens.from_tokenizer(engine.tokenizer, option_letters(constitution))
        self.sampler = PrincipleSampler(constitution.comparisons, seed=self.cfg.seed)
        suffix = len(engine.tokenizer(constitution.templates.cot_answer_suffix, add_special_tokens=False)["input_ids"])
        # Room the prompt must leave: one token to read, plus the rationale and suffix in CoT mode.
        self.reserve = 1 + (self.cfg.cot_max_tokens + suffix + 8 if self.cfg.mode == "cot" else 0)

    def principles_for(self, key: str) -> list:
        return self.sampler.sample(key=key, k=self.cfg.principles)

    # --- prompts ---------------------------------------------------------------------------------
    def _messages(self, principle, prompt, a: str, b: str) -> list[dict]:
        render = render_compare_cot if self.cfg.mode == "cot" else render_compare
        return render(self.c, [principle], prompt, a, b, few_shot=self.cfg.few_shot)

    def _ids(self, cmp: Comparison, r1: str, r2: str) -> list[list[int]]:
        """Token ids of every prompt of a comparison: for each principle, each order."""
        return [self.engine.format_chat(self._messages(p, cmp.prompt, a, b), continue_final_message=True)
                for p in cmp.principles for a, b in ([(r1, r2), (r2, r1)] if self.cfg.both_orders else [(r1, r2)])]

    def fit(self, cmp: Comparison) -> list[list[int]] | None:
        """Prompt ids of `cmp`, with both responses cut to the longest common token budget that fits the
        judge's context (question and options are never cut). None if even empty responses do not fit."""
        if not cmp.principles:
            cmp.principles = self.principles_for(cmp.key)
        budget = self.engine.max_model_len - self.reserve
        ids = self._ids(cmp, cmp.r1, cmp.r2)
        if max(map(len, ids)) <= budget:
            return ids
        tok = self.engine.tokenizer
        texts = [(r, tok(r, add_special_tokens=False)["input_ids"]) for r in (cmp.r1, cmp.r2)]

        def cut(n: int) -> tuple[str, str]:
            return tuple(r if len(t) <= n else tok.decode(t[:n]) + self.cfg.truncate_marker for r, t in texts)

        lo, hi, best = 0, max(len(t) for _, t in texts), None
        while lo <= hi:  # binary search on the per-response token cap
            mid = (lo + hi) // 2
            a, b = cut(mid)
            cand = self._ids(cmp, a, b)
            if max(map(len, cand)) <= budget:
                best, lo = (cand, a, b), mid + 1
            else:
                hi = mid - 1
        if best is None:
            return None
        cmp.truncated = True
        cmp.r1, cmp.r2 = best[1], best[2]
        return best[0]

    # --- scoring ---------------------------------------------------------------------------------
    def judge(self, comparisons: list[Comparison]) -> list[Comparison]:
        """Fill in p_ab, p_ba, mass_outside (and rationales) for every comparison, in one engine batch.
        Failures are recorded on the comparison (`error`), never raised."""
        prompts, owner = [], []
        for i, cmp in enumerate(comparisons):
            ids = self.fit(cmp)
            if ids is None:
                cmp.error = f"too_long: the question alone exceeds the judge's context ({self.engine.max_model_len})"
                continue
            prompts += ids
            owner += [i] * len(ids)
        rationales: list[str] = [""] * len(prompts)
        if self.cfg.mode == "cot" and prompts:
            prompts, rationales = self._with_rationales(prompts, owner, comparisons)
        probs = self.option_probs(prompts)
        per: dict[int, list] = {}
        for i, pr, rat in zip(owner, probs, rationales):
            per.setdefault(i, []).append((pr, rat))
        n_orders = 2 if self.cfg.both_orders else 1
        for i, items in per.items():
            cmp = comparisons[i]
            bad = next((pr.error for pr, _ in items if not pr.ok), None)
            if cmp.error or bad is not None:
                cmp.error = cmp.error or bad
                continue
            items = [(pr.value, rat) for pr, rat in items]
            clampf = (lambda p: soft_labels.clamp(p, *self.cfg.clamp)) if (self.cfg.mode == "cot" and self.cfg.clamp) \
                else (lambda p: p)
            ab = [clampf(pr.p_first) for pr, _ in items[0::n_orders]]
            cmp.p_ab = soft_labels.mean(ab)  # principle ensemble: average over the k principles
            if n_orders == 2:
                cmp.p_ba = soft_labels.mean([clampf(pr.p_first) for pr, _ in items[1::2]])
                cmp.rationale_ba = items[1][1]
            cmp.rationale = items[0][1]
            cmp.mass_outside = soft_labels.mean([pr.mass_outside for pr, _ in items])
            cmp.floored = any(pr.floored for pr, _ in items)
        return comparisons

    def option_probs(self, prompts: list[list[int]]) -> list[Scored[soft_labels.OptionProbs]]:
        """Next-token option probabilities of each prompt (or the engine's error). A letter with no
        variant in the top-k is scored exactly, in one second batch, for its canonical token."""
        if not prompts:
            return []
        tops = self.engine.top_logprobs(prompts, k=self.cfg.top_k)
        fa, fb = self.options.variants
        missing = []  # (prompt index, canonical token id)
        for i, top in enumerate(tops):
            if top.ok:
                for ids, canon in zip((fa, fb), self.options.canonical):
                    if not any(t in top.value for t in ids):
                        missing.append((i, canon))
        extra: dict[int, dict[int, float]] = {}
        if missing:
            scored = self.engine.score_continuations([prompts[i] for i, _ in missing], [[t] for _, t in missing])
            for (i, t), s in zip(missing, scored):
                if s.ok:
                    extra.setdefault(i, {})[t] = s.value[0]
        return [Scored(soft_labels.option_probs(top.value, fa, fb, extra.get(i))) if top.ok else top
                for i, top in enumerate(tops)]

    def _with_rationales(self, prompts, owner, comparisons):
        """CoT: generate a rationale after "Let's think step by step:", then append the answer suffix."""
        # The seed names the pair and the prompt's place within it (principle × order), never the position
        # in the batch: a resumed run draws the same rationale and hits the request cache.
        nth: dict[int, int] = {}
        params = []
        for i in owner:
            j = nth[i] = nth.get(i, -1) + 1
            params.append(SamplingParams(temperature=self.cfg.cot_temperature, max_tokens=self.cfg.cot_max_tokens,
                                         seed=request_seed(self.cfg.seed, f"{comparisons[i].key}:{j}")))
        results = self.engine.generate(prompts, params)
        suffix = self.engine.tokenizer(self.c.templates.cot_answer_suffix, add_special_tokens=False)["input_ids"]
        eos = {self.engine.tokenizer.eos_token_id}
        out_prompts, rats = [], []
        for ids, i, res in zip(prompts, owner, results):
            if not res.ok:
                comparisons[i].error = comparisons[i].error or f"rationale: {res.error}"
                out_prompts.append(ids)
                rats.append("")
                continue
            toks = [t for t in res.outputs[0].token_ids if t not in eos]
            out_prompts.append(ids + toks + suffix)
            rats.append(res.outputs[0].text.strip())
        return out_prompts, rats
