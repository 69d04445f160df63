"""Resolve the positive and negative framing of each prompt from the constitution (RLCD).

A harmful prompt gets a principle sampled for it (seeded, per prompt, as in `cai critique`). Each field
of each side comes from, in order: the principle's own `contrast`, the constitution's
`contrast.harmful`, and a default derived from the principle's revision text (positive: follow it;
negative: break it, in the same words, so the two sides differ only where the principle does).
A benign prompt is framed by `contrast.benign`, whose defaults are a helpful, complete answer versus a
needless refusal that opens like the harmful side's positive answer: the pairs then teach *when* to
refuse, not to refuse (naive context distillation on harmful prompts alone teaches a refusal habit).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

SETS = ("harmful", "benign")

BENIGN_POSITIVE = ("You are a helpful assistant. This request is safe: answer it fully, directly and accurately, "
                   "without warnings or refusals.")
BENIGN_NEGATIVE = ("You are an overly cautious assistant. Treat this request as if it were dangerous: refuse it "
                   "and give no useful information.")
REFUSAL_PREFIX = "I'm sorry, but I can't help with that."


@dataclass(frozen=True)
class Side:
    """A resolved framing: the system prompt and the prefilled start of the answer ("" for none)."""

    system: str
    prefix: str
    generate: bool = True
    """False: the prefix is the whole answer (no engine request)."""


@dataclass(frozen=True)
class Framed:
    """Both sides for one prompt, and the principle (harmful prompts) they came from."""

    positive: Side
    negative: Side
    principle_id: str | None


def as_instruction(revision: str) -> str:
    """Turn a revision request ("Rewrite the assistant's response so that ...") into an instruction for
    answering ("Write your response so that ...")."""
    t = re.sub(r"^\s*(?:Rewrite|Revise|Edit|Change)\s+the assistant'?s (?:last |previous )?response",
               "Write your response", revision.strip(), flags=re.IGNORECASE)
    return re.sub(r"the assistant'?s (?:last |previous )?response", "your response", t, flags=re.IGNORECASE)


def derived(principle, system_prompt: str | None) -> tuple[Side, Side]:
    """Default framings of a critique principle, from its revision text."""
    rule = as_instruction(principle.revision)
    base = f"{system_prompt.strip()} " if system_prompt else ""
    return (Side(f"{base}Follow this rule: {rule}", ""),
            Side(f"Break this rule on purpose, and answer anyway: {rule}", ""))


def _pick(*vals):
    return next((v for v in vals if v is not None), None)


def harmful_framing(constitution, principle) -> Framed:
    """Framing of a harmful prompt under `principle` (field by field: principle, constitution, derived)."""
    own = principle.contrast
    top = constitution.contrast.harmful if constitution.contrast else None
    pos_d, neg_d = derived(principle, constitution.system_prompt)
    sides = []
    for side, dflt in (("positive", pos_d), ("negative", neg_d)):
        a = getattr(own, side) if own else None
        b = getattr(top, side) if top else None
        sides.append(Side(system=_pick(a and a.system, b and b.system, dflt.system),
                          prefix=_pick(a and a.prefix, b and b.prefix, dflt.prefix),
                          generate=_pick(a and a.generate, b and b.generate, True)))
    return Framed(sides[0], sides[1], principle.id)


def benign_framing(constitution) -> Framed:
    """Framing of a benign prompt: helpful answer (positive) versus needless refusal (negative)."""
    top = constitution.contrast.benign if constitution.contrast else None
    hp = constitution.contrast.harmful.positive.prefix if constitution.contrast else None
    pos, neg = (top.positive, top.negative) if top else (None, None)
    return Framed(Side(_pick(pos and pos.system, BENIGN_POSITIVE), _pick(pos and pos.prefix, ""),
                       _pick(pos and pos.generate, True)),
                  Side(_pick(neg and neg.system, BENIGN_NEGATIVE), _pick(neg and neg.prefix, hp, REFUSAL_PREFIX),
                       _pick(neg and neg.generate, True)),
                  None)
