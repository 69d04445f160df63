"""A constitution's prompt templates: the jinja environment, rendering of each template, and the load-time check.

Templates are jinja2 files in `prompts/` (a constitution may override each one), rendered in a
`SandboxedEnvironment` with `StrictUndefined`, so a template can neither reach Python internals nor
silently print an empty variable. Each `render_*` here returns the text of one user turn; the chat
messages built around them (few-shot turns, system prompt, answer prefixes) are in `cai.prompts`, which
depends on this module and never the other way round.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from cai.constitution.schema import PROMPTS_DIR, ComparisonPrinciple, CritiquePrinciple, Scoring, template_sources
from cai.data.sources import Prompt, as_messages, last_user
from cai.errors import InputError
from cai.yamlio import display, read_text


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
    return _env(tuple((n, p, t) for n, (p, t) in template_sources(c).items()))


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
    path = template_sources(c)[name][0]
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


# --- the user turn of each template ---------------------------------------------------------------

def option_letters(c) -> tuple[str, str]:
    """The letters of the first and second option, as the labeller reads them from the next token."""
    return tuple(c.templates.options)


def score_range(c) -> tuple[int, int]:
    s = c.scoring or Scoring()
    return s.min, s.max


def render_critique_request(c, principle, prompt: Prompt, response: str) -> str:
    conv = as_messages(prompt)
    return render(c, "critique", principle=principle, prompt=last_user(conv), conversation=conv,
                  response=response)


def render_revision_request(c, principle, prompt: Prompt, response: str, critique: str) -> str:
    conv = as_messages(prompt)
    return render(c, "revision", principle=principle, prompt=last_user(conv), conversation=conv,
                  response=response, critique=critique)


def render_compare_user(c, name: str, principles: list, prompt: Prompt, response_a: str, response_b: str) -> str:
    """The user turn of template `name` (`compare` or `compare_cot`): conversation, principles, options."""
    conv = as_messages(prompt)
    letters = option_letters(c)
    return render(c, name, conversation=conv, prompt=last_user(conv), principles=list(principles),
                  options=[{"letter": letters[0], "text": response_a}, {"letter": letters[1], "text": response_b}],
                  response_a=response_a, response_b=response_b)


def render_score_user(c, prompt: Prompt, response: str) -> str:
    s = c.scoring or Scoring()
    conv = as_messages(prompt)
    return render(c, "score", conversation=conv, prompt=last_user(conv), response=response,
                  rubric=s.rubric, min=s.min, max=s.max)


def example_principles(c, ex, fallback: list) -> list:
    """The principles a comparison few-shot example is shown with: its own, else the first of `fallback`."""
    return [c.comparison(ex.principle)] if ex.principle else list(fallback[:1] or c.comparisons[:1])


def example_prompt(ex) -> Prompt:
    return ex.prompt if isinstance(ex.prompt, str) else [m.model_dump() for m in ex.prompt]


# --- load-time check -----------------------------------------------------------------------------

def check_templates(c) -> None:
    """Render every template once with sample values (and every comparison few-shot example), so template
    mistakes surface when the constitution is loaded, not hours into a run."""
    crit = c.critiques[0] if c.critiques else CritiquePrinciple(id="x", critique="Critique.", revision="Revise.")
    comp = c.comparisons[0] if c.comparisons else ComparisonPrinciple(id="x", instruction="Choose.")
    render_revision_request(c, crit, "Question?", "Answer.", "Critique.")
    render_critique_request(c, crit, "Question?", "Answer.")
    for name, cot in (("compare", False), ("compare_cot", True)):
        if c.comparisons:
            for ex in c.few_shot.comparison:
                if cot and not ex.rationale:
                    continue
                render_compare_user(c, name, example_principles(c, ex, [comp]), example_prompt(ex),
                                    ex.response_a, ex.response_b)
        render_compare_user(c, name, [comp], "Question?", "One.", "Two.")
    render_score_user(c, "Question?", "Answer.")
