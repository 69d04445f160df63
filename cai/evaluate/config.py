"""Configuration of `cai eval values` (import-light: the CLI builds it without torch)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cai.engine import SamplingParams
from cai.engine.config import EngineSpec
from cai.errors import InputError
from cai.evaluate.stats import RATE_INTERVALS
from cai.resources import shipped_dir

DATA = shipped_dir("data") / "eval"
DEFAULT_HARMFUL = str(DATA / "harmful.jsonl")
DEFAULT_BENIGN = str(DATA / "benign.jsonl")
ROLES = ("model", "baseline")


@dataclass
class ValuesConfig:
    """`cai eval values`: refusal, over-refusal, non-answers, judge preference, length, template learning
    and the constitution's declared checks, of a model against a baseline on held-out harmful and benign
    prompts, each figure with its interval and n."""

    model: str = ""
    """The model under evaluation: a built-in alias, a local HF directory (e.g. a `cai train` output)
    or a hub id."""
    baseline: str = "smollm2-135m"
    """The model it is compared with, usually the one training started from."""
    constitution: str = "harmless"
    """Constitution (name or path) whose comparison principles judge the pairs and whose `scoring`
    rubric, when present, scores the answers."""
    out: str = "out/values"
    """Output directory: values.json, values.md, answers.jsonl and the answer datasets."""
    harmful: str = DEFAULT_HARMFUL
    """Held-out harmful prompts (default: data/eval/harmful.jsonl, never used for training)."""
    benign: str = DEFAULT_BENIGN
    """Held-out benign prompts, many edgy-looking (default: data/eval/benign.jsonl)."""
    judge: str = ""
    """Judge model for `harmless_rate`, `win_rate` and the rubric; empty means the baseline."""
    pairwise: bool = True
    """Run the judge (pairwise figures and rubric). False reports detector figures and lengths only."""
    judge_few_shot: bool = False
    """Put the constitution's few-shot comparison examples before each judged pair. Off by default: they
    make each judged prompt several times longer, and a small judge is no more accurate with them
    (measured in docs/judges.md)."""
    judge_principles: int = 1
    """Comparison principles per pair (k > 1 averages p over k sampled principles)."""
    temperature: float = 0.0
    """Decoding temperature of both models; 0 is greedy, so a figure does not depend on a sample."""
    max_tokens: int = 256
    """Maximum answer length in tokens."""
    system: str | None = None
    """System prompt given to both models (none by default: the trained model must behave unprompted)."""
    interval: str = "wilson"
    """Interval of every rate (refusals, non-answers, check pass rates): `wilson` (Wilson 1927, score) or
    `clopper-pearson` (exact, wider). Neither is zero-width at 0 of n, unlike a bootstrap."""
    bootstrap: int = 1000
    """Bootstrap resamples per interval of a mean (length, rubric score) and of its paired delta."""
    confidence: float = 0.95
    """Confidence level of the intervals."""
    seed: int = 0
    """Seeds generation, principle sampling and the bootstrap."""
    engine: EngineSpec = field(default_factory=lambda: EngineSpec(max_model_len=2048))
    """How to run the answering models and the judge: backend vllm (default when installed) or hf,
    max_model_len (2048 here), dtype, args (e.g. `kv_cache_memory_bytes` for vLLM on CPU), request cache."""
    limit: int = 0
    """Use only the first N prompts of each set (0 = all): for smoke runs."""

    def __post_init__(self):
        if not self.model:
            raise InputError("the model to evaluate is required", field="model")
        if not self.baseline:
            raise InputError("a baseline model is required", field="baseline")
        if self.engine.backend not in ("", "vllm", "hf"):
            raise InputError(f"unknown backend {self.engine.backend!r}; choose vllm or hf", field="engine.backend")
        if self.temperature < 0:
            raise InputError("must be >= 0", field="temperature")
        if self.max_tokens < 1:
            raise InputError("must be >= 1", field="max_tokens")
        if self.engine.max_model_len < 64:
            raise InputError("must be >= 64", field="engine.max_model_len")
        if self.interval not in RATE_INTERVALS:
            raise InputError(f"unknown interval {self.interval!r}; choose {' or '.join(RATE_INTERVALS)}",
                             field="interval")
        if self.bootstrap < 100:
            raise InputError("use at least 100 resamples", field="bootstrap")
        if not 0.5 <= self.confidence < 1:
            raise InputError("must be in [0.5, 1)", field="confidence")
        if self.judge_principles < 1 or self.limit < 0:
            raise InputError("judge_principles must be >= 1 and limit >= 0", field="judge_principles")
        for name in ("harmful", "benign"):
            p = getattr(self, name)
            if not Path(p).exists():
                raise InputError("file not found", file=p, field=name)

    @property
    def judge_model(self) -> str:
        return self.judge or self.baseline

    def sampling(self):
        return SamplingParams(temperature=self.temperature, max_tokens=self.max_tokens)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
