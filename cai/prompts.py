"""Prompt builders: a constitution's templates rendered into the chat messages each stage sends.

Every function returns `[{"role", "content"}]` lists; the engine applies the model's own chat template
later, so no chat markup is ever written here. The comparison and score prompts end with an assistant
message holding an answer prefix, which the engine continues (`continue_final_message=True`) so that the
next token is the option letter or the score. The user turns come from `cai.constitution.templates`;
nothing in `cai.constitution` imports this module.
"""
from __future__ import annotations

from cai.constitution.templates import (
    example_principles,
    example_prompt,
    option_letters,
    render_compare_user,
    render_critique_request,
    render_revision_request,
    render_score_user,
)
from cai.data.sources import Prompt, as_messages


def _system(c) -> list[dict]:
    return [{"role": "system", "content": c.system_prompt}] if c.system_prompt else []


def answer_prefix(c) -> str:
    return c.templates.answer_prefix


def cot_answer_suffix(c) -> str:
    """Appended after a generated chain-of-thought rationale, so the next token is the option letter."""
    return c.templates.cot_answer_suffix


# --- critique and revision (SL-CAI) --------------------------------------------------------------

def few_shot_critique_messages(c, k: int | bool = True) -> list[dict]:
    """The first `k` critique few-shot conversations (True: all, False: none), flattened into one chat
    (their system turns dropped)."""
    convs = c.few_shot.critique if k is True else c.few_shot.critique[:int(k)]
    return [{"role": m.role, "content": m.content} for conv in convs for m in conv if m.role != "system"]


def critique_messages(c, principle, prompt: Prompt, response: str, few_shot: int | bool = True) -> list[dict]:
    """system? + the first `few_shot` few-shot conversations (True: all) + prompt + response + critique
    request: the model's next turn is the critique."""
    return [*_system(c), *few_shot_critique_messages(c, few_shot), *as_messages(prompt),
            {"role": "assistant", "content": response},
            {"role": "user", "content": render_critique_request(c, principle, prompt, response)}]


def revision_messages(c, principle, prompt: Prompt, response: str, critique: str,
                      few_shot: int | bool = True) -> list[dict]:
    """`critique_messages` + critique + revision request: the model's next turn is the revision."""
    return [*critique_messages(c, principle, prompt, response, few_shot),
            {"role": "assistant", "content": critique},
            {"role": "user", "content": render_revision_request(c, principle, prompt, response, critique)}]


# --- comparison (RL-CAI feedback) ----------------------------------------------------------------

def _examples(c, name: str, principles: list, cot: bool) -> list[dict]:
    out, letters = [], option_letters(c)
    for ex in c.few_shot.comparison:
        if cot and not ex.rationale:
            continue
        letter = letters[0] if ex.answer == "A" else letters[1]
        answer = (f"{c.templates.cot_prefix} {ex.rationale}{c.templates.cot_answer_suffix}{letter})" if cot
                  else f"{c.templates.answer_prefix}{letter})")
        out += [{"role": "user", "content": render_compare_user(c, name, example_principles(c, ex, principles),
                                                                example_prompt(ex), ex.response_a, ex.response_b)},
                {"role": "assistant", "content": answer}]
    return out


def render_compare(c, principles: list, prompt: Prompt, response_a: str, response_b: str,
                   few_shot: bool = True) -> list[dict]:
    """Multiple-choice prompt ending in an assistant turn `The answer is: (`; the next token is A or B."""
    return [*_system(c), *(_examples(c, "compare", principles, cot=False) if few_shot else []),
            {"role": "user", "content": render_compare_user(c, "compare", principles, prompt, response_a,
                                                            response_b)},
            {"role": "assistant", "content": c.templates.answer_prefix}]


def render_compare_cot(c, principles: list, prompt: Prompt, response_a: str, response_b: str,
                       few_shot: bool = True) -> list[dict]:
    """Chain-of-thought variant ending in `Let's think step by step:`; after the generated rationale the
    engine appends `cot_answer_suffix(c)` and reads the option letter."""
    return [*_system(c), *(_examples(c, "compare_cot", principles, cot=True) if few_shot else []),
            {"role": "user", "content": render_compare_user(c, "compare_cot", principles, prompt, response_a,
                                                            response_b)},
            {"role": "assistant", "content": c.templates.cot_prefix}]


# --- direct scores (d-RLAIF) ---------------------------------------------------------------------

def render_score(c, prompt: Prompt, response: str) -> list[dict]:
    """Rating prompt ending in an assistant turn `Rating: `; the next token is the score."""
    return [*_system(c), {"role": "user", "content": render_score_user(c, prompt, response)},
            {"role": "assistant", "content": c.templates.score_prefix}]
