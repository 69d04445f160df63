"""What a `generate` run is: `GenerateStage` (prompts, model and engine, sampling, output). Import-light:
the CLI builds it without torch."""
from __future__ import annotations

from dataclasses import dataclass, field

from cai.data.sources import DEFAULT_PROMPTS
from cai.engine.base import SamplingParams
from cai.engine.config import EngineSpec
from cai.errors import InputError


@dataclass(frozen=True)
class GenerateStage:
    """`generate`: answer a prompt set with a model (the `responses` config)."""

    out: str = ""
    """Output dataset directory (`--out`; set by the pipeline)."""
    model: str = "smollm2-135m"
    """Model: built-in alias, local HF directory, hub id, or an earlier stage (`${stages.sft}`)."""
    engine: EngineSpec = field(default_factory=EngineSpec)
    """How to run the model."""
    prompts: str = DEFAULT_PROMPTS
    """JSONL/CSV/Parquet file, dataset directory or hub id."""
    column: str = "prompt"
    """Prompt column."""
    limit: int = 0
    """Use only the first N prompts (0 = all)."""
    sampling: SamplingParams = field(default_factory=lambda: SamplingParams(max_tokens=256))
    """Sampling of the answers (temperature, top_p, max_tokens, n, stop)."""
    system: str | None = None
    """System prompt."""
    seed: int = 0
    """Seeds every request (per prompt id)."""

    def __post_init__(self):
        if self.limit < 0:
            raise InputError("must be >= 0", field="limit")
