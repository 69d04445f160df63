"""Configuration of `cai contrast` (import-light: the CLI builds it without torch)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cai.engine.config import EngineSpec
from cai.errors import InputError
from cai.resources import shipped_dir

DATA = shipped_dir("data")


@dataclass
class ContrastConfig:
    """`cai contrast`: RLCD preference pairs (Yang et al. 2023, arXiv 2307.12950). The policy answers
    each prompt under a positive and a negative framing from the constitution; the positive answer is
    `chosen` by construction, so no judge is needed."""

    model: str = "smollm2-135m"
    """The policy that answers under both framings (usually the model you will train)."""
    constitution: str = "harmless"
    """Constitution (name or path): its principles and `contrast` section give the framings."""
    prompts: str = str(DATA / "red_team.jsonl")
    """Prompts framed by the constitution's principles (for `harmless`: harmful requests)."""
    benign: str = str(DATA / "helpful.jsonl")
    """Benign prompts, framed by `contrast.benign` (helpful answer vs needless refusal). Empty skips
    them; for a safety constitution that teaches a refusal habit, so keep them."""
    out: str = "out/contrast"
    """Output dataset directory: configs `prefs`, `sft` and `pairs`."""
    column: str = "prompt"
    """Prompt column of both prompt files."""
    limit: int = 0
    """Use only the first N principle-framed prompts (0 = all)."""
    benign_limit: int = 0
    """Use only the first N benign prompts (0 = all). The ratio of benign to harmful prompts sets where
    a small model lands on the refusal / over-refusal trade-off."""
    temperature: float = 0.7
    """Sampling temperature of both sides."""
    top_p: float = 1.0
    """Nucleus sampling mass."""
    max_tokens: int = 192
    """Maximum generated tokens per answer (after the prefilled prefix)."""
    seed: int = 0
    """Seeds principle sampling and generation. Both sides of a pair share their request seed, which
    keeps their surface forms alike."""
    max_similarity: float = 0.9
    """Drop pairs whose two answers are this similar or more (word-level difflib ratio in [0, 1]): a
    near-identical pair carries no preference signal, only noise."""
    drop_benign_refusals: bool = True
    """Drop benign pairs whose positive answer the refusal detector counts as a refusal, so a refusal
    is never `chosen` on a benign prompt."""
    engine: EngineSpec = field(default_factory=lambda: EngineSpec(max_model_len=2048))
    """How to run the policy: backend vllm (default when installed) or hf, max_model_len (2048 here),
    dtype, args (e.g. `kv_cache_memory_bytes` for vLLM on CPU), request cache."""
    overwrite: bool = False
    """Replace an output directory written by a run with another configuration."""

    def __post_init__(self):
        if not self.prompts:
            raise InputError("a prompt file is required", field="prompts")
        for name in ("prompts", "benign"):
            p = getattr(self, name)
            if p and "/" in p and not Path(p).exists() and p.startswith((".", "/")):
                raise InputError("file not found", file=p, field=name)
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.max_tokens < 1:
            raise InputError("need temperature >= 0, 0 < top_p <= 1 and max_tokens >= 1", field="temperature")
        if not 0 < self.max_similarity <= 1:
            raise InputError("must be in (0, 1]", field="max_similarity")
        if self.limit < 0 or self.benign_limit < 0:
            raise InputError("must be >= 0", field="limit" if self.limit < 0 else "benign_limit")
        if self.engine.backend not in ("", "vllm", "hf"):
            raise InputError(f"unknown backend {self.engine.backend!r}; choose vllm or hf", field="engine.backend")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
