"""Prompt templates: render a constitution's principles into chat messages.

Templates are jinja2 files in `prompts/` (a constitution may override each one), rendered in a
`SandboxedEnvironment` with `StrictUndefined`, so a template can neither reach Python internals nor
silently print an empty variable. Every function returns text or `[{"role", "content"}]` lists; the
engine applies the model's own chat template later, so no chat markup is ever written here. The
comparison and score prompts end with an assistant message holding an answer prefix, which the engine
continues (`continue_final_message=True`) so that the next token is the option letter or the score.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from cai.constitution.loader import display
from cai.constitution.schema import TEMPLATE_NAMES, ComparisonPrinciple, CritiquePrinciple, Scoring
from cai.errors import InputError
from cai.resources import shipped_dir
from cai.yamlio import read_text

PROMPTS_DIR = shipped_dir("prompts")

Prompt = str | list[dict]
"""A prompt is one user turn, or a conversation of `{role, content}` turns ending with the user."""


def template_paths(c) -> dict[str, Path]:
    """The file each template is read from: the constitution's override, else `prompts/NAME.j2`."""
    return {n: Path(getattr(c.templates, n)) if getattr(c.templates, n) else PROMPTS_DIR / f"{n}.j2"
            for n in TEMPLATE_NAMES}


def read_templates(c) -> dict[str, tuple[str, str]]:
    """name -> (path, text) of every template, read once when the constitution is loaded, so that the
    hash and the prompts come from the same text even if the file changes during a run."""
    return {n: (str(p), read_text(p)) for n, p in template_paths(c).items()}


def sources(c) -> dict[str, tuple[str, str]]:
    return c.template_sources or read_templates(c)


class _Loader(jinja2.BaseLoader):
    """Named templates come from the loaded texts; `{% include %}` looks beside them, then in prompts/."""

    def __init__(self, files: tuple[tuple[str, str, str], ...]):
        self.files = {name: (path, text) for name, path, text in files}
        self.dirs = [*dict.fromkeys(str(Path(p).parent) for p, _ in self.files.values()), str(PROMPTS_DIR)]

    def get_source(self, environment, template):
        if template in self.files:
            path, text = self.files[template]
            return text, path, lambda: True
        if ".." in Path(template).parts or Path(template).is_absolute():
            raise jinja2.TemplateNotFound(template)
        path = next((Path(d) / template for d in self.dirs if (Path(d) / template).is_file()), None)
        if path is None:
            raise jinja2.TemplateNotFound(template)
        return read_text(path), str(path), lambda: False


@functools.lru_cache(maxsize=32)
def _env(files: tuple[tuple[str, str, str], ...]) -> SandboxedEnvironment:
    return SandboxedEnvironment(loader=_Loader(files), undefined=jinja2.StrictUndefined, autoescape=False,
                                trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False,
                                auto_reload=False)


def env_for(c) -> SandboxedEnvironment:
    return _env(tuple((n, p, t) for n, (p, t) in sources(c).items()))


def _template_line(exc: BaseException, path: str) -> int | None:
    # jinja rewrites tracebacks so that template frames carry the template's file name and line.
    line, tb = None, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == path:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def render(c, name: str, **variables: Any) -> str:
    """Render template `name` for constitution `c`; every failure is an `InputError` naming the file."""
    path = sources(c)[name][0]
    where = {"file": display(Path(path)), "field": f"templates.{name}"}
    env = env_for(c)
    try:
        template = env.get_template(name)
    except jinja2.TemplateSyntaxError as e:
        raise InputError(f"template syntax: {e.message}", line=e.lineno, **where) from None
    except jinja2.TemplateNotFound as e:
        raise InputError(f"template not found: {e.name}", **where) from None
    try:
        return template.render(**variables).strip()
    except jinja2.exceptions.SecurityError as e:
        raise InputError(f"unsafe template refused by the sandbox: {e}", line=_template_line(e, path),
                         **where) from None
    except jinja2.TemplateNotFound as e:
        raise InputError(f"template not found: {e.name} (includes are looked up beside the template and in "
                         f"{PROMPTS_DIR})", line=_template_line(e, path), **where) from None
    except jinja2.UndefinedError as e:
        raise InputError(f"undefined variable: {e.message} (available: {', '.join(sorted(variables))})",
                         line=_template_line(e, path), **where) from None
    except jinja2.TemplateError as e:
        raise InputError(f"template error: {e}", line=_template_line(e, path), **where) from None


# --- helpers -------------------------------------------------------------------------------------

def conversation(prompt: Prompt) -> list[dict]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [{"role": m["role"], "content": m["content"]} for m in prompt]


def _last_user(conv: list[dict]) -> str:
    return next((m["content"] for m in reversed(conv) if m["role"] == "user"), "")


def _system(c) -> list[dict]:
    return [{"role": "system", "content": c.system_prompt}] if c.system_prompt else []


def answer_prefix(c) -> str:
    return c.templates.answer_prefix


def cot_answer_suffix(c) -> str:
    """Appended after a generated chain-of-thought rationale, so the next token is the option letter."""
    return c.templates.cot_answer_suffix


def option_letters(c) -> tuple[str, str]:
    """The letters of the first and second option, as the labeller reads them from the next token."""
    return tuple(c.templates.options)


# --- critique and revision (SL-CAI) --------------------------------------------------------------

def render_critique_request(c, principle, prompt: Prompt, response: str) -> str:
    conv = conversation(prompt)
    return render(c, "critique", principle=principle, prompt=_last_user(conv), conversation=conv,
                  response=response)


def render_revision_request(c, principle, prompt: Prompt, response: str, critique: str) -> str:
    conv = conversation(prompt)
    return render(c, "revision", principle=principle, prompt=_last_user(conv), conversation=conv,
                  response=response, critique=critique)


def few_shot_critique_messages(c) -> list[dict]:
    """The critique few-shot conversations, flattened into one chat (their system turns dropped)."""
    return [{"role": m.role, "content": m.content} for conv in c.few_shot.critique for m in conv
            if m.role != "system"]


def critique_messages(c, principle, prompt: Prompt, response: str, few_shot: bool = True) -> list[dict]:
    """system? + few-shot + prompt + response + critique request: the model's next turn is the critique."""
    return [*_system(c), *(few_shot_critique_messages(c) if few_shot else []), *conversation(prompt),
            {"role": "assistant", "content": response},
            {"role": "user", "content": render_critique_request(c, principle, prompt, response)}]


def revision_messages(c, principle, prompt: Prompt, response: str, critique: str,
                      few_shot: bool = True) -> list[dict]:
    """`critique_messages` + critique + revision request: the model's next turn is the revision."""
    return [*critique_messages(c, principle, prompt, response, few_shot),
            {"role": "assistant", "content": critique},
            {"role": "user", "content": render_revision_request(c, principle, prompt, response, critique)}]


# --- comparison (RL-CAI feedback) ----------------------------------------------------------------

def _compare_user(c, name: str, principles: list, prompt: Prompt, response_a: str, response_b: str) -> str:
    conv = conversation(prompt)
    letters = option_letters(c)
    return render(c, name, conversation=conv, prompt=_last_user(conv), principles=list(principles),
                  options=[{"letter": letters[0], "text": response_a}, {"letter": letters[1], "text": response_b}],
                  response_a=response_a, response_b=response_b)


def _example_principles(c, ex, fallback: list) -> list:
    return [c.comparison(ex.principle)] if ex.principle else list(fallback[:1] or c.comparisons[:1])


def _examples(c, name: str, principles: list, cot: bool) -> list[dict]:
    out, letters = [], option_letters(c)
    for ex in c.few_shot.comparison:
        if cot and not ex.rationale:
            continue
        prompt = ex.prompt if isinstance(ex.prompt, str) else [m.model_dump() for m in ex.prompt]
        letter = letters[0] if ex.answer == "A" else letters[1]
        answer = (f"{c.templates.cot_prefix} {ex.rationale}{c.templates.cot_answer_suffix}{letter})" if cot
                  else f"{c.templates.answer_prefix}{letter})")
        out += [{"role": "user", "content": _compare_user(c, name, _example_principles(c, ex, principles),
                                                         prompt, ex.response_a, ex.response_b)},
                {"role": "assistant", "content": answer}]
    return out


def render_compare(c, principles: list, prompt: Prompt, response_a: str, response_b: str,
                   few_shot: bool = True) -> list[dict]:
    """Multiple-choice prompt ending in an assistant turn `The answer is: (`; the next token is A or B."""
    return [*_system(c), *(_examples(c, "compare", principles, cot=False) if few_shot else []),
            {"role": "user", "content": _compare_user(c, "compare", principles, prompt, response_a, response_b)},
            {"role": "assistant", "content": c.templates.answer_prefix}]


def render_compare_cot(c, principles: list, prompt: Prompt, response_a: str, response_b: str,
                       few_shot: bool = True) -> list[dict]:
    """Chain-of-thought variant ending in `Let's think step by step:`; after the generated rationale the
    engine appends `cot_answer_suffix(c)` and reads the option letter."""
    return [*_system(c), *(_examples(c, "compare_cot", principles, cot=True) if few_shot else []),
            {"role": "user", "content": _compare_user(c, "compare_cot", principles, prompt, response_a,
                                                      response_b)},
            {"role": "assistant", "content": c.templates.cot_prefix}]


# --- direct scores (d-RLAIF) ---------------------------------------------------------------------

def score_range(c) -> tuple[int, int]:
    s = c.scoring or Scoring()
    return s.min, s.max


def render_score(c, prompt: Prompt, response: str) -> list[dict]:
    """Rating prompt ending in an assistant turn `Rating: `; the next token is the score."""
    s = c.scoring or Scoring()
    conv = conversation(prompt)
    user = render(c, "score", conversation=conv, prompt=_last_user(conv), response=response,
                  rubric=s.rubric, min=s.min, max=s.max)
    return [*_system(c), {"role": "user", "content": user},
            {"role": "assistant", "content": c.templates.score_prefix}]


# --- load-time check -----------------------------------------------------------------------------

def check_templates(c) -> None:
    """Render every template once with sample values, so template mistakes surface when the
    constitution is loaded, not hours into a run."""
    crit = c.critiques[0] if c.critiques else CritiquePrinciple(id="x", critique="Critique.", revision="Revise.")
    comp = c.comparisons[0] if c.comparisons else ComparisonPrinciple(id="x", instruction="Choose.")
    render_revision_request(c, crit, "Question?", "Answer.", "Critique.")
    render_critique_request(c, crit, "Question?", "Answer.")
    if c.comparisons:
        render_compare(c, [comp], "Question?", "One.", "Two.")
        render_compare_cot(c, [comp], "Question?", "One.", "Two.")
    else:
        _compare_user(c, "compare", [comp], "Question?", "One.", "Two.")
        _compare_user(c, "compare_cot", [comp], "Question?", "One.", "Two.")
    render_score(c, "Question?", "Answer.")
