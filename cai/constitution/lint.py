"""Lint a resolved constitution: problems that load fine but will make poor prompts.

Errors (invalid files) are raised by the loader; these are warnings, each located at the line where
the principle or example was written, possibly in a parent file. Each check is one small function
in `CHECKS`, so adding one touches one place.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import jinja2.meta

from cai.constitution.schema import Constitution, template_sources
from cai.constitution.templates import env_for


@dataclass(frozen=True)
class LintWarning:
    file: str | None
    line: int | None
    col: int | None
    field: str
    message: str

    def __str__(self) -> str:
        loc = ":".join(str(x) for x in (self.file, self.line, self.col) if x is not None)
        return f"{loc}: warning: {self.field}: {self.message}"


# Loose on purpose: these catch a principle that forgot its object, not style.
_REFERS_TO_RESPONSE = re.compile(r"\b(response|answer|repl(y|ies)|assistant|said|says|wrote|output|you|your|"
                                 r"generat)", re.IGNORECASE)
_ASKS_TO_REVISE = re.compile(r"\b(rewrite|rewriting|revise|revision|rephrase|edit|amend|remove|change|fix|"
                             r"correct|improve|write)", re.IGNORECASE)
_RAW_MARKUP = re.compile(r"(^|\n)\s*(Human|Assistant):\s|<\|im_start\|>|\[INST\]|<\|(user|assistant)\|>")


def _at(c: Constitution, p, field: str, message: str) -> LintWarning:
    file, line, col = p._source or (str(c.source_path), None, None)
    return LintWarning(file, line, col, field, message)


def _at_example(c: Constitution, kind: str, i: int, message: str) -> LintWarning:
    file, line, col = c.few_shot._sources.get((kind, i), (str(c.source_path), None, None))
    return LintWarning(file, line, col, f"few_shot.{kind}[{i}]", message)


def check_principle_texts(c: Constitution) -> list[LintWarning]:
    out = []
    for i, p in enumerate(c.critiques):
        if not _REFERS_TO_RESPONSE.search(p.critique):
            out.append(_at(c, p, f"critiques[{i}].critique", f"principle {p.id!r} never refers to the "
                       "response it critiques (say 'the assistant's response')"))
        if not _ASKS_TO_REVISE.search(p.revision):
            out.append(_at(c, p, f"critiques[{i}].revision", f"principle {p.id!r} does not ask for a rewrite "
                       "(say 'Rewrite the response ...')"))
    for i, p in enumerate(c.comparisons):
        if not _REFERS_TO_RESPONSE.search(p.instruction):
            out.append(_at(c, p, f"comparisons[{i}].instruction", f"principle {p.id!r} never refers to the "
                       "responses it compares"))
    return out


def check_duplicate_texts(c: Constitution) -> list[LintWarning]:
    out = []
    for key, text in (("critiques", lambda p: p.critique), ("comparisons", lambda p: p.instruction)):
        seen: dict[str, str] = {}
        for i, p in enumerate(getattr(c, key)):
            norm = " ".join(text(p).lower().split())
            if norm in seen:
                out.append(_at(c, p, f"{key}[{i}]", f"principle {p.id!r} has the same text as {seen[norm]!r}"))
            seen.setdefault(norm, p.id)
    return out


def check_few_shot(c: Constitution) -> list[LintWarning]:
    out = []
    for i, conv in enumerate(c.few_shot.critique):
        body = [m for m in conv if m.role != "system"]
        if len(body) < 6:
            out.append(_at_example(c, "critique", i, f"has {len(body)} turns; the critique template expects "
                                   "at least 6: prompt, answer, critique request, critique, revision request, "
                                   "revision"))
        if any(_RAW_MARKUP.search(m.content) for m in conv):
            out.append(_at_example(c, "critique", i, "contains raw transcript markup (Human:/Assistant: or "
                                   "chat tokens); write each turn as its own message"))
    for i, ex in enumerate(c.few_shot.comparison):
        texts = [ex.response_a, ex.response_b] + ([ex.prompt] if isinstance(ex.prompt, str) else
                                                  [m.content for m in ex.prompt])
        if any(_RAW_MARKUP.search(t) for t in texts):
            out.append(_at_example(c, "comparison", i, "contains raw transcript markup; write the conversation "
                                   "as a list of chat turns"))
    answers = [ex.answer for ex in c.few_shot.comparison]
    if len(answers) >= 3 and len(set(answers)) == 1:
        out.append(_at_example(c, "comparison", 0, f"every example's answer is {answers[0]}; mix A and B so the "
                               "examples do not teach a position bias"))
    return out


_TEMPLATE_NEEDS = {"critique": "principle", "revision": "principle", "compare": "options",
                   "compare_cot": "options", "score": "response"}


def check_templates(c: Constitution) -> list[LintWarning]:
    out = []
    env = env_for(c)
    for name, need in _TEMPLATE_NEEDS.items():
        if getattr(c.templates, name) is None:
            continue
        source = env.loader.get_source(env, name)[0]
        used = jinja2.meta.find_undeclared_variables(env.parse(source))
        alternatives = {"options": {"options", "response_a", "response_b"}}.get(need, {need})
        if not used & alternatives:
            out.append(LintWarning(template_sources(c)[name][0], None, None, f"templates.{name}",
                                   f"the template never uses {need!r}"))
    return out


CHECKS = [check_principle_texts, check_duplicate_texts, check_few_shot, check_templates]


def lint(c: Constitution) -> list[LintWarning]:
    return [w for check in CHECKS for w in check(c)]
