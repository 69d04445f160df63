"""What an SL-CAI run is: `CritiqueConfig` (rounds, per-step sampling, system prompt, filters, seed),
the filters that keep a final revision out of `sft`/`prefs` (it stays in `trace`), and `CritiqueStage`
(the config plus inputs, output and engine, for `cai critique` and pipelines).

Imports no torch, so that the CLI registers cheaply.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cai.data.sources import DEFAULT_PROMPTS
from cai.engine.base import SamplingParams
from cai.engine.config import EngineSpec
from cai.errors import InputError

STEPS = ("answer", "critique", "revision")

# A revision that is not an answer to the user: it echoes the scaffolding ("Revision:", "Critique request",
# "Rewrite the response so that ..."), labels itself ("Revised response:"), or critiques the response
# instead of answering it ("The advice in the response is reckless ..."): an answer to the user never talks
# about "the response" or "the assistant". Patterns come from real SmolLM2-135M revisions
# (tests/test_critique_filters.py).
_SCAFFOLD = re.compile(
    r"(?im)^\s*\W*(?:critique|revision|rewrite|rewritten|revised)(?:\s*(?:request|response|version|answer))?\s*\W*:"
    r"|critique\s*request|revision\s*request"
    r"|\b(?:rewrite|revise|rewriting|revising)\s+(?:the|this|your|my)\s+(?:assistant'?s?\s+)?(?:last\s+)?response"
    r"|\bthe\s+assistant\b"
    r"|\b(?:the|this|that|your)\s+(?:original\s+|initial\s+|last\s+|previous\s+|above\s+|first\s+)?response\b"
    # an answer speaks to the user as "you"; one about "the user" or opening on "The statement/advice/..."
    # is a critique ("The statement ... is not a joke", "The user might be in distress", "Here's a revised version")
    r"|\bthe\s+user(?:'s|s)?\b|\brevised\s+version\b"
    r"|\A\W*(?:the|this)\s+(?:statement|advice|suggestion|critique|part|request|message)\b")


SCAFFOLD_STOPS = (" the user", "The user", " the response", "The response", " this response", "This response",
                  " your response", "Your response", " that response", " the assistant",
                  "The assistant", "Critique request", "critique request", "Revision request", "revision request",
                  "\nRevision:", "\nCritique:", " revised version")
"""Markers on which a revision stops early (`CritiqueConfig.early_stop`): a revision that writes one of
them is dropped by the `scaffold` filter whatever follows, so the rest of it would be wasted tokens. Each
is a literal that `_SCAFFOLD` matches (tests/test_critique_filters.py checks it)."""


def _norm(text: str) -> str:
    return " ".join(text.split()).lower()


def _empty(final: dict, init: dict, critique: dict | None = None, examples: tuple[str, ...] = ()) -> bool:
    return not final["text"].strip()


def _truncated(final: dict, init: dict, critique: dict | None = None, examples: tuple[str, ...] = ()) -> bool:
    return final["finish_reason"] == "length"


def _scaffold(final: dict, init: dict, critique: dict | None = None, examples: tuple[str, ...] = ()) -> bool:
    if _SCAFFOLD.search(final["text"]):
        return True
    # a copy of the critique it was asked to act on (small models often repeat their last turn)
    return critique is not None and _norm(final["text"])[:80] == _norm(critique["text"])[:80]


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


COPY_WORDS = 8
"""`copy`: a revision sharing a run of this many words with a few-shot turn copies it."""


def _copy(final: dict, init: dict, critique: dict | None = None, examples: tuple[str, ...] = ()) -> bool:
    # A small model often answers the few-shot example instead of its own user ("I'm sorry, failing again
    # is really painful ... One exam doesn't decide your worth" to a question about rifles).
    w = _words(final["text"])
    grams = {tuple(w[i:i + COPY_WORDS]) for i in range(len(w) - COPY_WORDS + 1)}
    return bool(grams) and any(tuple(e[i:i + COPY_WORDS]) in grams for e in map(_words, examples)
                               for i in range(len(e) - COPY_WORDS + 1))


def _unchanged(final: dict, init: dict, critique: dict | None = None, examples: tuple[str, ...] = ()) -> bool:
    return _norm(final["text"]) == _norm(init["text"])


FILTERS: dict[str, Callable[..., bool]] = {
    "empty": _empty, "truncated": _truncated, "scaffold": _scaffold, "copy": _copy, "unchanged": _unchanged}
"""Filter name -> predicate(final revision step, initial answer step, its critique step or None, the
few-shot turns' texts) that drops the row. A row is counted against the first filter (in this order) that
drops it."""


def first_filter(names: tuple[str, ...], final: dict, init: dict, critique: dict | None = None,
                 examples: tuple[str, ...] = ()) -> str | None:
    return next((n for n in FILTERS if n in names and FILTERS[n](final, init, critique, examples)), None)


def _default(max_tokens: int = 256, temperature: float = 0.7) -> SamplingParams:
    return SamplingParams(temperature=temperature, max_tokens=max_tokens)


@dataclass
class CritiqueConfig:
    rounds: int = 2
    """Critique -> revision rounds per conversation; each draws a fresh principle with the seed, repeats
    allowed (the paper's samples use 4, the HF recipe 1)."""
    answer: SamplingParams = field(default_factory=lambda: _default(96))
    """Sampling for the initial answer (the response the constitution then critiques; `rejected` in prefs).
    96 tokens: SmolLM2-135M's answers mostly run past 128, and the critique needs the gist, not all of it."""
    critique: SamplingParams = field(default_factory=lambda: _default(64))
    """Sampling for each critique (the few-shot critiques are 2-3 sentences, about 50 tokens; SmolLM2's
    longer critiques drift off the response)."""
    revision: SamplingParams = field(default_factory=lambda: _default(160))
    """Sampling for each revision (the last one becomes the answer in `sft`/`prefs`; the few-shot
    revisions are about 60-90 tokens, so 160 leaves room without paying for rambling)."""
    system: str | None = None
    """System prompt of the initial answer. Critique and revision turns use the constitution's own."""
    few_shot: int | bool = 2
    """How many of the constitution's few-shot critique conversations (the first ones, in file order) go
    before every critique/revision request: 0 or false for none, true for all. Each costs its length in
    attention on every token generated after it (measured in docs/sl-cai.md)."""
    filters: tuple[str, ...] = tuple(FILTERS)
    """Filters applied to the final revision (names from `FILTERS`); `()` keeps every revision."""
    early_stop: bool = True
    """Stop a revision as soon as it writes a scaffold marker (`SCAFFOLD_STOPS`: "the user", "The response",
    "Critique request", ...), keeping the marker in its text: the `scaffold` filter drops it either way, and
    the retry starts sooner. Used with engines that report which stop string matched (vllm, hf)."""
    retries: int = 5
    """A revision that the filters would drop (truncated, scaffold, empty, copy, unchanged) is sampled again
    with another seed, up to this many times; the last attempt stands. Its discarded tokens count as wasted.
    A small model passes on a roughly constant share of attempts, so each retry still pays (docs/sl-cai.md)."""
    send_ahead: bool = True
    """While the engine holds fewer requests than half the run's conversations (the end of a run, where
    conversations wait on their own retries), send a retried revision's later attempts ahead of their turn.
    Attempts are seeded by key and taken in order, so the same attempt is taken either way (up to the engine's
    batch-dependent numerics); attempts not needed are counted as `ahead_tokens` (and wasted). Timing only:
    not part of a run's identity."""
    seed: int = 0
    """Seeds principle draws and every request (per prompt id and step, so batching never matters)."""

    def __post_init__(self):
        if self.rounds < 1:
            raise InputError("must be >= 1", field="rounds")
        for step in STEPS:
            if getattr(self, step).n != 1:
                raise InputError("one sample per step (n=1)", field=f"{step}.n")
        if self.retries < 0:
            raise InputError("must be >= 0", field="retries")
        if not isinstance(self.few_shot, bool) and self.few_shot < 0:
            raise InputError("must be >= 0, or true/false", field="few_shot")
        self.filters = tuple(self.filters)
        unknown = [f for f in self.filters if f not in FILTERS]
        if unknown:
            raise InputError(f"unknown filter(s) {', '.join(unknown)}; choose from {', '.join(FILTERS)}",
                             field="filters")

    def params(self, step: str, seed: int) -> SamplingParams:
        return getattr(self, step).replace(seed=seed)

    def token_budget(self) -> int:
        """New tokens one conversation may generate, retries left out (what the engine plans for)."""
        return self.answer.max_tokens + self.rounds * (self.critique.max_tokens + self.revision.max_tokens)

    def sampling(self) -> dict[str, Any]:
        return {s: getattr(self, s).to_dict() for s in STEPS}

    def to_dict(self) -> dict[str, Any]:
        return {"rounds": self.rounds, "sampling": self.sampling(), "system": self.system,
                "few_shot": self.few_shot, "filters": list(self.filters), "early_stop": self.early_stop, "retries": self.retries,
                "seed": self.seed}


@dataclass
class CritiqueStage(CritiqueConfig):
    """`critique` (SL-CAI) as a stage: `CritiqueConfig` plus its inputs, output and engine (`cai critique`,
    pipelines); writes `sft`, `prefs` and `trace`."""

    out: str = ""
    """Output dataset directory (`--out`; set by the pipeline)."""
    model: str = "smollm2-135m"
    """The model that answers, critiques and revises."""
    engine: EngineSpec = field(default_factory=EngineSpec)
    """How to run the model."""
    constitution: str = "harmless"
    """Built-in constitution name or YAML path (its critique principles and few-shot examples are used)."""
    prompts: str = DEFAULT_PROMPTS
    """Red-team prompts: JSONL/CSV/Parquet file, dataset directory or hub id."""
    column: str = "prompt"
    """Prompt column."""
    limit: int = 0
    """Use only the first N prompts (0 = all)."""

    def __post_init__(self):
        super().__post_init__()
        if self.limit < 0:
            raise InputError("must be >= 0", field="limit")
