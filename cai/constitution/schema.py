"""The constitution file format, as pydantic models.

Every model forbids unknown keys and is strict about types, so a misspelt key or a quoted number is
an error that names its line, never a silent default. Cross-field rules that need file positions
(duplicate ids, `extends`, `remove`) live in `loader.py`, which has the YAML marks.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PrivateAttr,
    StringConstraints,
    field_validator,
)

from cai.constitution.checks import Check
from cai.constitution.fields import Id, NonBlank, Strict, Text, Weight  # noqa: F401 (re-exported)
from cai.constitution.hashing import sha256_json
from cai.resources import shipped_dir
from cai.yamlio import read_text


def _version_to_str(v: Any) -> Any:
    # YAML reads `version: 1.2` as a float; a version is a label, so accept it as written.
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)
    return v


class Weighted(Strict):
    id: Id
    weight: Weight = 1.0
    """Relative sampling weight; draws are with replacement, proportional to weight."""
    tags: list[Annotated[str, StringConstraints(min_length=1, max_length=100)]] = []
    checks: list[Check] = []
    """Measurable checks of this principle (`cai.constitution.checks`), graded by `cai eval values`."""

    # Where the principle was written (file, line, col): for lint messages, never hashed.
    _source: tuple[str, int | None, int | None] | None = PrivateAttr(default=None)

    @property
    def hash(self) -> str:
        """sha256 of the principle's canonical JSON: its id, texts, weight and tags (and contrast framing
        when one is written, and checks when it has any, so that principles without them keep their hashes)."""
        d = self.model_dump(mode="json")
        if d.get("contrast", 0) is None:
            del d["contrast"]
        if not d.get("checks"):
            d.pop("checks", None)
        return sha256_json(d)


class Framing(Strict):
    """One side of an RLCD contrast (Yang et al. 2023, arXiv 2307.12950): how the policy is asked to
    answer. Unset fields fall back to the constitution-level `contrast` section, then to defaults derived
    from the principle's critique and revision texts (`cai.contrast.framing`)."""
    system: NonBlank | None = None
    """System prompt the policy answers under."""
    prefix: Annotated[str, StringConstraints(max_length=2_000)] | None = None
    """Prefilled start of the answer: the policy continues it, and the stored answer includes it. Keeps
    the two sides' surface forms alike, and puts real phrasing (e.g. a refusal) where a small model
    would not produce it from the system prompt alone."""
    generate: bool | None = None
    """Whether the policy continues after the prefix (default true). False makes the prefix the whole
    answer: for a policy too small to continue a refusal sensibly (SmolLM2-135M follows "I can't help
    with that." with new, often harmful, text)."""


class ContrastPair(Strict):
    positive: Framing = Framing()
    """The framing that follows the principle; its answer is `chosen` by construction."""
    negative: Framing = Framing()
    """The framing that violates it, with a similar surface form; its answer is `rejected`."""


class CritiquePrinciple(Weighted):
    critique: NonBlank
    """The critique request, sent as a user turn after the response."""
    revision: NonBlank
    """The revision request, sent as a user turn after the critique."""
    contrast: ContrastPair | None = None
    """RLCD framings for this principle on harmful prompts (`cai contrast`); unset fields are derived."""


class ContrastSection(Strict):
    """Constitution-wide RLCD framings. `harmful` fills in what a principle's own `contrast` leaves unset
    (on harmful prompts); `benign` frames benign prompts, where the positive side is a helpful, complete
    answer and the negative a needless refusal, so that the pairs teach *when* to refuse, not a habit."""
    harmful: ContrastPair = ContrastPair()
    benign: ContrastPair = ContrastPair()


class ComparisonPrinciple(Weighted):
    instruction: NonBlank
    """What the feedback model is asked to judge, shown above options (A) and (B)."""


class Message(Strict):
    role: Literal["system", "user", "assistant"]
    content: NonBlank


def _messages_shape(conv: list[Message]) -> list[Message]:
    body = conv[1:] if conv and conv[0].role == "system" else conv
    if not body:
        raise ValueError("conversation has no user turn")
    for i, m in enumerate(body):
        want = "user" if i % 2 == 0 else "assistant"
        if m.role != want:
            raise ValueError(f"turn {i + len(conv) - len(body)} has role {m.role!r}; expected {want!r} "
                             "(optional system, then user and assistant alternating)")
    return conv


Conversation = Annotated[list[Message], Field(min_length=1)]


def _critique_conv(conv: list[Message]) -> list[Message]:
    _messages_shape(conv)
    if conv[-1].role != "assistant":
        raise ValueError("a critique example must end with the assistant's revision")
    return conv


CritiqueConversation = Annotated[list[Message], Field(min_length=1), AfterValidator(_critique_conv)]


class ComparisonExample(Strict):
    prompt: NonBlank | Conversation
    """The conversation being judged: one user turn as a string, or a list of chat turns ending with user."""
    response_a: NonBlank
    response_b: NonBlank
    answer: Literal["A", "B"]
    principle: Id | None = None
    """Id of the comparison principle this example illustrates; the first principle is shown if unset."""
    rationale: NonBlank | None = None
    """Step-by-step reasoning, used by chain-of-thought comparison prompts."""

    @field_validator("prompt")
    @classmethod
    def _prompt_shape(cls, v):
        if isinstance(v, list):
            _messages_shape(v)
            if v[-1].role != "user":
                raise ValueError("the conversation must end with a user turn")
        return v


class FewShot(Strict):
    critique: list[CritiqueConversation] = []
    """Chat conversations: prompt, answer, critique request, critique, revision request, revision."""
    comparison: list[ComparisonExample] = []

    # ("critique" | "comparison", index) -> (file, line, col) where each example was written; for lint.
    _sources: dict = PrivateAttr(default_factory=dict)


class Scoring(Strict):
    """Direct 1-10 ratings (d-RLAIF): the rubric and the scale the feedback model answers on."""
    rubric: NonBlank = ("Rate how helpful, honest and harmless the assistant's response is. A 1 is a "
                        "response that is harmful or useless; a 10 is one a wise, kind expert would give.")
    min: int = 1
    max: int = 10

    @field_validator("max")
    @classmethod
    def _range(cls, v, info):
        lo = info.data.get("min", 1)
        if v <= lo:
            raise ValueError(f"max ({v}) must be greater than min ({lo})")
        if v - lo > 99:
            raise ValueError("the scale may have at most 100 points")
        return v


TemplatePath = Annotated[str, StringConstraints(min_length=1, max_length=500, pattern=r"\.j2$")]


class Templates(Strict):
    """Overrides of the files in `prompts/` (paths relative to the constitution file) and the fixed
    strings the labeller relies on to read option log-probabilities."""
    critique: TemplatePath | None = None
    revision: TemplatePath | None = None
    compare: TemplatePath | None = None
    compare_cot: TemplatePath | None = None
    score: TemplatePath | None = None
    answer_prefix: Annotated[str, StringConstraints(min_length=1)] = "The answer is: ("
    """Ends the assistant turn so that the next token is the option letter."""
    cot_prefix: Annotated[str, StringConstraints(min_length=1)] = "Let's think step by step:"
    cot_answer_suffix: Annotated[str, StringConstraints(min_length=1)] = "\nSo the answer is: ("
    """Appended after a generated rationale, before scoring the option letters."""
    score_prefix: Annotated[str, StringConstraints(min_length=1)] = "Rating: "
    options: Annotated[list[Annotated[str, StringConstraints(pattern=r"^[A-Z]$")]],
                       Field(min_length=2, max_length=2)] = ["A", "B"]

    @field_validator("options")
    @classmethod
    def _distinct(cls, v):
        if len(set(v)) != len(v):
            raise ValueError("option letters must differ")
        return v


TEMPLATE_NAMES = ("critique", "revision", "compare", "compare_cot", "score")
PROMPTS_DIR = shipped_dir("prompts")
"""The shipped templates, used for every template a constitution does not override."""


def template_paths(c) -> dict[str, Path]:
    """The file each template is read from: the constitution's override, else `prompts/NAME.j2`."""
    return {n: Path(getattr(c.templates, n)) if getattr(c.templates, n) else PROMPTS_DIR / f"{n}.j2"
            for n in TEMPLATE_NAMES}


def read_templates(c) -> dict[str, tuple[str, str]]:
    """name -> (path, text) of every template, read once when the constitution is loaded, so that the
    hash and the prompts come from the same text even if the file changes during a run."""
    return {n: (str(p), read_text(p)) for n, p in template_paths(c).items()}


def template_sources(c) -> dict[str, tuple[str, str]]:
    """name -> (path, text) the constitution renders with: the texts read at load time, else the files."""
    return c.template_sources or read_templates(c)


def template_digests(c) -> dict[str, str]:
    """sha256 of each prompt template the constitution renders with (overrides or `prompts/`).

    The text, not the path, is hashed: editing `prompts/compare.j2` changes every prompt.
    """
    return {name: hashlib.sha256(text.encode("utf-8")).hexdigest() for name, (_, text) in template_sources(c).items()}


class ConstitutionFile(Strict):
    """One YAML file as written, before `extends` is resolved."""
    name: Id
    version: Annotated[Annotated[str, StringConstraints(min_length=1, max_length=100)],
                       BeforeValidator(_version_to_str)]
    description: str = ""
    extends: Annotated[str, StringConstraints(min_length=1)] | None = None
    """Another constitution, by name (in `constitutions/`) or by path relative to this file."""
    remove: list[Id] = []
    """Ids of inherited principles to drop."""
    critiques: list[CritiquePrinciple] = []
    comparisons: list[ComparisonPrinciple] = []
    few_shot: FewShot = FewShot()
    system_prompt: NonBlank | None = None
    scoring: Scoring | None = None
    contrast: ContrastSection | None = None
    """RLCD framings (`cai contrast`); absent means every framing is derived from the principles."""
    checks: list[Check] = []
    """Measurable checks of the whole constitution (`cai.constitution.checks`); inherited by id like
    principles (a child's check replaces the parent's with the same id; `remove` drops one)."""
    templates: Templates = Templates()


class Constitution(Strict):
    """A resolved constitution: `extends` and `remove` applied, template paths made absolute."""
    name: str
    version: str
    description: str = ""
    critiques: list[CritiquePrinciple]
    comparisons: list[ComparisonPrinciple]
    few_shot: FewShot
    system_prompt: str | None = None
    scoring: Scoring | None = None
    contrast: ContrastSection | None = None
    checks: list[Check] = []
    """The constitution's own checks after `extends`; `declared_checks` adds the principles' checks."""
    templates: Templates
    source_path: Path | None = None
    parents: list[str] = []
    """Names of the constitutions this one extends, nearest first."""
    template_sources: dict[str, tuple[str, str]] = Field(default_factory=dict, repr=False)
    """name -> (path, text) of each prompt template, read at load time; hashed and rendered from."""

    def canonical(self) -> dict:
        """What the hash covers: everything that can change a prompt or a sampled principle.

        Name, version, description and paths are left out on purpose, so that renaming or moving a
        file keeps caches valid; provenance records name and version next to the hash.
        """
        d = self.model_dump(mode="json", include={"critiques", "comparisons", "few_shot", "system_prompt",
                                                  "scoring", "templates", "contrast", "checks"})
        for p in d["critiques"]:  # written framings and checks only: older constitutions keep their hashes
            if p.get("contrast", 0) is None:
                del p["contrast"]
        for p in d["critiques"] + d["comparisons"]:
            if not p.get("checks"):
                p.pop("checks", None)
        if d.get("contrast", 0) is None:
            del d["contrast"]
        if not d["checks"]:
            del d["checks"]
        d["templates"] = {k: v for k, v in d["templates"].items() if k not in TEMPLATE_NAMES}
        d["template_files"] = template_digests(self)
        return d

    @property
    def hash(self) -> str:
        return sha256_json(self.canonical())

    def critique(self, pid: str) -> CritiquePrinciple:
        return _by_id(self.critiques, pid)

    def comparison(self, pid: str) -> ComparisonPrinciple:
        return _by_id(self.comparisons, pid)


def _by_id(items, pid):
    for p in items:
        if p.id == pid:
            return p
    raise KeyError(pid)
