"""Configuration of the feedback stages: one dataclass each for sampling and labelling, and the stage
configs that add inputs, output and engine(s) to them (`SampleStage`, `LabelStage`, `RlaifStage`: what
`cai sample/label/rlaif` and pipelines run)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from cai.data.sources import DEFAULT_PROMPTS
from cai.engine.config import EngineSpec
from cai.errors import InputError
from cai.resources import shipped_dir

DEFAULT_COMPARISONS = str(shipped_dir("data") / "labels" / "comparisons.jsonl")
PAIRINGS = ("all", "random")
MODES = ("compare", "cot")


@dataclass(frozen=True)
class SampleConfig:
    """`cai sample`: K responses per prompt from the policy, then pairs of distinct responses."""

    n: int = 4
    """Responses per prompt (one vLLM request with n=K)."""
    temperature: float = 1.0
    """Sampling temperature of the policy; diverse samples make informative pairs."""
    top_p: float = 1.0
    """Nucleus sampling mass."""
    max_tokens: int = 256
    """Maximum response length in tokens."""
    pairing: str = "all"
    """"all": every pair of distinct responses; "random": `pairs_per_prompt` pairs drawn with the seed."""
    pairs_per_prompt: int = 1
    """Pairs per prompt in "random" pairing (fewer when there are not enough distinct responses)."""
    seed: int = 0
    """Run seed: per-prompt sampling seeds and random pairing derive from it."""
    system: str | None = None
    """Optional system prompt for the policy."""

    def __post_init__(self):
        if self.n < 2:
            raise InputError(f"need at least 2 responses per prompt to form pairs, got {self.n}", field="n")
        if self.pairing not in PAIRINGS:
            raise InputError(f"unknown pairing {self.pairing!r}; choose one of {', '.join(PAIRINGS)}",
                             field="pairing")
        if self.pairs_per_prompt < 1:
            raise InputError("pairs_per_prompt must be >= 1", field="pairs_per_prompt")
        if self.temperature < 0:
            raise InputError(f"must be >= 0, got {self.temperature}", field="temperature")
        if not 0 < self.top_p <= 1:
            raise InputError(f"must be in (0, 1], got {self.top_p}", field="top_p")
        if self.max_tokens < 1:
            raise InputError(f"must be >= 1, got {self.max_tokens}", field="max_tokens")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class LabelConfig:
    """`cai label`: AI preference labels from a judge's option log-probs (METHOD.md, RL-CAI)."""

    mode: str = "compare"
    """"compare": read the option letter after the answer prefix; "cot": generate a rationale first."""
    principles: int = 1
    """Comparison principles per comparison. 1 samples one (the CAI paper); k > 1 scores the pair under
    k sampled principles and averages p (principle ensembling)."""
    both_orders: bool = True
    """Score (A, B) and (B, A) and average p(first better) (RLAIF position debiasing)."""
    few_shot: bool = True
    """Put the constitution's few-shot comparison examples before each comparison."""
    top_k: int = 20
    """Top log-probs read per prompt (vLLM's default max_logprobs is 20). A letter missing from them is
    scored exactly with `score_continuations`."""
    clamp: tuple[float, float] | None = (0.4, 0.6)
    """CoT only: clamp each order's p to this range (Bai et al. 2022 §4.2); None turns it off."""
    cot_max_tokens: int = 192
    """CoT only: maximum rationale length in tokens."""
    cot_temperature: float = 0.0
    """CoT only: rationale sampling temperature (0 = greedy)."""
    seed: int = 0
    """Seeds principle sampling (per comparison key) and CoT sampling."""
    batch_pairs: int = 256
    """Pairs per engine batch; each finished batch is logged, so a killed run loses at most one batch."""
    truncate_marker: str = " [...]"
    """Appended to a response cut to fit the judge's context."""

    def __post_init__(self):
        if self.mode not in MODES:
            raise InputError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}", field="mode")
        if self.principles < 1:
            raise InputError("principles must be >= 1", field="principles")
        if not 1 <= self.top_k <= 20:
            raise InputError("top_k must be in 1..20", field="top_k")
        if self.clamp is not None:
            lo, hi = self.clamp
            if not 0 <= lo <= 0.5 <= hi <= 1:
                raise InputError(f"clamp must satisfy 0 <= lo <= 0.5 <= hi <= 1, got {self.clamp}", field="clamp")
            object.__setattr__(self, "clamp", (float(lo), float(hi)))
        if self.cot_max_tokens < 1 or self.batch_pairs < 1:
            raise InputError("cot_max_tokens and batch_pairs must be >= 1", field="config")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---- stage configs ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SampleStage(SampleConfig):
    """`sample`: K responses per prompt from the policy, paired (`samples`, `pairs`)."""

    out: str = ""
    """Output dataset directory (`--out`; set by the pipeline)."""
    model: str = "smollm2-135m"
    """The policy that samples."""
    engine: EngineSpec = field(default_factory=EngineSpec)
    """How to run the policy."""
    prompts: str = DEFAULT_PROMPTS
    """Prompts: JSONL/CSV/Parquet file, dataset directory or hub id."""
    column: str = "prompt"
    """Prompt column."""
    limit: int = 0
    """Use only the first N prompts (0 = all)."""


@dataclass(frozen=True)
class LabelStage(LabelConfig):
    """`label`: AI preference labels for pairs, from a judge's option log-probs (`prefs`)."""

    out: str = ""
    """Output dataset directory (`--out`; set by the pipeline)."""
    data: str = ""
    """Pairs to label: a `sample` stage (`${stages.sample}`) or a table with prompt, response_a, response_b."""
    judge: str = "smollm2-135m"
    """The feedback model; may differ from (and be stronger than) the policy."""
    engine: EngineSpec = field(default_factory=EngineSpec)
    """How to run the judge (e.g. backend: openai with base_urls for a served stronger judge)."""
    constitution: str = "harmless"
    """Built-in constitution name or YAML path (its comparison principles are used)."""

    def __post_init__(self):
        super().__post_init__()
        if not self.data:
            raise InputError("is required: the pairs to label, e.g. ${stages.sample}", field="data")


@dataclass(frozen=True)
class RlaifStage:
    """`rlaif`: sample from the policy, pair and label with the judge, in one stage (`samples`, `pairs`, `prefs`)."""

    out: str = ""
    """Output dataset directory (`--out`; set by the pipeline)."""
    model: str = "smollm2-135m"
    """The policy that samples."""
    engine: EngineSpec = field(default_factory=EngineSpec)
    """How to run the policy."""
    judge: str = ""
    """The feedback model; empty means the policy judges itself (one engine serves both)."""
    judge_engine: EngineSpec = field(default_factory=EngineSpec)
    """How to run the judge."""
    constitution: str = "harmless"
    """Built-in constitution name or YAML path."""
    prompts: str = DEFAULT_PROMPTS
    """Prompts: JSONL/CSV/Parquet file, dataset directory or hub id."""
    column: str = "prompt"
    """Prompt column."""
    limit: int = 0
    """Use only the first N prompts (0 = all)."""
    sample: SampleConfig = field(default_factory=SampleConfig)
    """Sampling and pairing."""
    label: LabelConfig = field(default_factory=LabelConfig)
    """Labelling."""


@dataclass(frozen=True)
class EvalJudgeStage(LabelStage):
    """`eval judge`: a judge's accuracy, log-likelihood and calibration on human-labelled pairs, each judged
    exactly as `label` would (the same fields; `data` holds the human labels, `out` is optional)."""

    out: str = ""
    """Report JSON (top-level `accuracy`); empty prints the summary only."""
    data: str = DEFAULT_COMPARISONS
    """Labelled pairs: JSONL `{prompt, response_a, response_b, label: A|B}` (label: the better response).
    Default: the shipped set data/labels/comparisons.jsonl (see docs/judges.md for how it was built)."""
    judge: str = "smollm2-135m"
    """The judge under evaluation."""
