"""Configs of the training stages: one dataclass per stage (`SFTConfig`, `RMConfig`, `DPOConfig`), built from
shared parts (`DataConfig`, `RunConfig`, `OptimConfig`, `LoraConfig`), loaded from YAML plus dotted CLI
overrides (`optim.lr=1e-5`).

Every field is documented where it is declared. Defaults run as they are. `__post_init__` refuses invalid
values and combinations by raising `InputError(field=...)`; `load_config` adds the YAML file, line and
column of the offending field, and refuses unknown keys and wrong types in the same one-line form
(`cai.config`, shared by every stage). This module imports no torch, so the CLI can register its commands cheaply.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cai.config import Source, config_error, load_config, to_dict
from cai.errors import InputError

# ---- parts shared by the stages ----------------------------------------------------------------------


@dataclass
class DataConfig:
    path: str = ""
    """Dataset: a directory in cai's layout (`DIR/<config>/<split>-*.parquet`), a .jsonl or a .parquet file.
    Empty means "set it in the YAML or with `data.path=...`"."""
    config: str = ""
    """Dataset config (subdirectory) to read; empty means the stage's natural one (`sft` or `prefs`)."""
    split: str = "train"
    """Split whose files (`<split>-*.parquet`) are read."""
    eval_fraction: float = 0.05
    """Fraction of rows held out for evaluation (at least one row when > 0), chosen with the run seed."""
    eval_path: str = ""
    """A separate held-out dataset (same layout); when set, `eval_fraction` is ignored."""
    max_length: int = 1024
    """Tokens per sequence (prompt + response). Longer sequences are truncated like TRL (SFT/DPO: cut the
    end, DPO also drops pairs whose prompt alone fills it) or, for the reward model, dropped like TRL; all
    are counted and reported."""
    truncation_mode: Literal["keep_start", "keep_end"] = "keep_start"
    """Which end of an over-long DPO sequence to keep (TRL's `truncation_mode`)."""
    limit: int = 0
    """Use only the first N rows (0 = all): for smoke runs."""

    def __post_init__(self):
        if not 0.0 <= self.eval_fraction < 1.0:
            raise InputError("must be in [0, 1)", field="eval_fraction")
        if self.max_length < 8:
            raise InputError("must be at least 8", field="max_length")
        if self.limit < 0:
            raise InputError("must be >= 0", field="limit")


@dataclass
class RunConfig:
    output_dir: str = "runs/train"
    """Where the final model, checkpoints, metrics, plot and model card go."""
    seed: int = 0
    """Seeds the data order, the eval split and torch."""
    batch_size: int = 8
    """Global batch per optimizer step (examples or pairs), over all processes and micro-batches."""
    micro_batch_size: int = 4
    """Examples (pairs) per forward pass on each process; the rest is gradient accumulation."""
    tokens_per_batch: int = 0
    """Padding-free packing: each process's share of the global batch goes through forwards of at most this
    many tokens, the examples back to back in one row with no padding, position ids restarting per example
    and attention confined to each example (`cai.train.packing`); preference pairs share their prompt (run
    once, chosen and rejected attending to it). 0 = padded micro-batches of `micro_batch_size` rows. The
    losses are the padded path's; only the speed and memory change. An example longer than the budget gets
    a forward of its own."""
    max_steps: int = 0
    """Optimizer steps; 0 means `epochs` passes over the training rows."""
    epochs: float = 1.0
    """Passes over the data when `max_steps` is 0."""
    save_every: int = 100
    """Checkpoint every K steps (0 = only at the end)."""
    keep_checkpoints: int = 2
    """How many recent checkpoints to keep."""
    eval_every: int = 0
    """Evaluate on the held-out rows every K steps (0 = only at the end)."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Weight dtype. float32 on CPU; bfloat16 halves memory on GPUs."""
    progress: bool = True
    """Show a progress bar with ETA (main process only)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory."""

    def __post_init__(self):
        if Path(self.output_dir).expanduser().exists() and not Path(self.output_dir).expanduser().is_dir():
            raise InputError("names a file; it must be a directory (new or from an earlier run)", field="output_dir")
        for name in ("batch_size", "micro_batch_size"):
            if getattr(self, name) < 1:
                raise InputError("must be >= 1", field=name)
        for name in ("max_steps", "save_every", "eval_every", "tokens_per_batch"):
            if getattr(self, name) < 0:
                raise InputError("must be >= 0", field=name)
        if self.keep_checkpoints < 1:
            raise InputError("must be >= 1", field="keep_checkpoints")
        if self.max_steps == 0 and self.epochs <= 0:
            raise InputError("must be > 0 when max_steps is 0", field="epochs")


@dataclass
class OptimConfig:
    lr: float = 1e-5
    """Peak learning rate of AdamW."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW betas."""
    eps: float = 1e-8
    """AdamW epsilon."""
    scheduler: Literal["linear", "cosine", "constant"] = "linear"
    """Learning-rate schedule after warmup."""
    warmup_steps: int = 0
    """Linear warmup steps."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this (0 = no clipping)."""

    def __post_init__(self):
        if self.lr <= 0:
            raise InputError("must be > 0", field="lr")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise InputError("must be two numbers in [0, 1)", field="betas")
        if self.warmup_steps < 0 or self.max_grad_norm < 0 or self.weight_decay < 0:
            raise InputError("warmup_steps, max_grad_norm and weight_decay must be >= 0", field="warmup_steps")


@dataclass
class LoraConfig:
    r: int = 0
    """LoRA rank; 0 trains all weights (no LoRA)."""
    alpha: float = 16.0
    """LoRA scaling numerator (scale = alpha / r)."""
    dropout: float = 0.0
    """Dropout on the LoRA input. Off by default: DPO and reward models want deterministic forwards."""
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    """Module names (suffixes) to adapt; each must exist in the model."""
    merge: bool = True
    """At the end, also save the adapter merged into the base weights as the output model, so that
    transformers and vLLM load it without peft. The adapter alone is kept in `OUTPUT/adapter`."""

    def __post_init__(self):
        if self.r < 0:
            raise InputError("must be >= 0", field="r")
        if not 0.0 <= self.dropout < 1.0:
            raise InputError("must be in [0, 1)", field="dropout")
        if self.r and not self.target_modules:
            raise InputError("must name at least one module", field="target_modules")

    @property
    def enabled(self) -> bool:
        return self.r > 0


# ---- one config per stage -------------------------------------------------------------------------------


@dataclass
class SFTConfig:
    """Supervised fine-tuning on chat `messages`, loss on assistant tokens only."""

    model: str = "smollm2-135m"
    """Base causal LM: a built-in alias, a local HF directory or a hub id."""
    data: DataConfig = field(default_factory=DataConfig)
    """Training data (`sft` config: a `messages` column)."""
    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="runs/sft"))
    """Batching, steps, checkpoints and output."""
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=2e-5))
    """Optimizer and schedule."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """Optional LoRA adapter."""
    packing: bool = False
    """Pack several examples into each `max_length` row (block-diagonal attention via restarted
    position ids, so examples never attend to each other)."""

    def __post_init__(self):
        if not self.data.config:
            self.data.config = "sft"
        if self.packing and self.run.tokens_per_batch:
            raise InputError("packing (whole examples per max_length row) and run.tokens_per_batch (padding-free "
                             "micro-batches) are two ways to pack: set one", field="packing")


@dataclass
class RMConfig:
    """Bradley-Terry reward model on preference pairs, with soft labels from `p_chosen`."""

    model: str = "smollm2-135m"
    """Initial model: the SFT output or any causal LM; a fresh scalar head is added."""
    data: DataConfig = field(default_factory=DataConfig)
    """Preference pairs (`prefs` config: `prompt`, `chosen`, `rejected`, optional `p_chosen`)."""
    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="runs/rm"))
    """Batching, steps, checkpoints and output."""
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-5))
    """Optimizer and schedule."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """Optional LoRA adapter (the scalar head is always trained in full)."""
    soft_labels: bool = True
    """Train on `p_chosen` as a soft target when the column exists (hard labels otherwise)."""
    margin: float = 0.0
    """Margin m in −log σ(r_c − r_r − m) (Llama 2); 0 disables it. A per-row `margin` column in the data
    replaces it for that row, as in TRL's RewardTrainer. For hard labels only: on pairs trained with a soft
    `p_chosen` a margin would make the rewards overconfident, so that combination is refused."""
    center_rewards_coefficient: float = 0.0
    """Weight of the (r_c + r_r)² term that keeps rewards centred (Eisenstein et al. 2023); 0 disables it."""
    normalize_with: str = ""
    """After training, fit gain and bias so these samples score mean 0, std 1 (METHOD.md: SFT-policy
    samples): a cai dataset with responses (its `samples` config from `cai sample`/`cai rlaif`, `responses`
    from `cai generate`, or `sft` messages) or a file of such rows or of pairs; empty means both responses of
    the held-out pairs. Read before training starts, so a bad path fails at once."""

    def __post_init__(self):
        if not self.data.config:
            self.data.config = "prefs"
        if self.margin < 0:
            raise InputError("must be >= 0", field="margin")
        if self.center_rewards_coefficient < 0:
            raise InputError("must be >= 0", field="center_rewards_coefficient")


@dataclass
class DPOConfig:
    """Direct preference optimisation and variants, with reference log-probs computed once."""

    model: str = "smollm2-135m"
    """Policy to train (usually the SFT output)."""
    ref_model: str = ""
    """Reference policy; empty means the initial `model` (with LoRA: the base with the adapter disabled)."""
    data: DataConfig = field(default_factory=DataConfig)
    """Preference pairs (`prefs` config: `prompt`, `chosen`, `rejected`, optional `p_chosen`)."""
    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="runs/dpo"))
    """Batching, steps, checkpoints and output."""
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=5e-7))
    """Optimizer and schedule."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """Optional LoRA adapter."""
    loss_type: Literal["sigmoid", "ipo", "cdpo", "robust"] = "sigmoid"
    """Loss variant (see `cai.train.losses.DPO_LOSSES`)."""
    beta: float = 0.1
    """KL strength β (τ for IPO)."""
    label_smoothing: float = 0.0
    """cDPO's label smoothing ε, the same for every pair (loss_type cdpo, or sigmoid, where it is cDPO).
    Robust DPO reads `robust_epsilon` instead."""
    soft_labels: bool = True
    """When the data has `p_chosen`: cDPO uses ε = 1 − p_chosen per pair instead of `label_smoothing`, and
    robust DPO may estimate its one ε from them (`robust_epsilon: auto`)."""
    robust_epsilon: float | Literal["auto"] = "auto"
    """Robust DPO's label-flip rate ε (Chowdhury et al. 2024): one number for the whole dataset, in
    [0, 0.5). "auto" estimates it from the training pairs' soft labels as mean(1 − p_chosen) (it needs a
    `p_chosen` column) and refuses an estimate above 0.4, where the loss is scaled by 1/(1 − 2ε) > 5 and
    the labels are close to coin flips (cdpo suits those). Never 1 − p_chosen per pair: that divides by
    2·p_chosen − 1, so the pairs nearest p = 0.5 would dominate. Only loss_type robust reads it."""
    rpo_alpha: float = 0.0
    """Weight α of the chosen responses' per-token NLL added to the DPO loss (RPO, Pang et al. 2024; TRL's
    `rpo_alpha`, which suggests 1.0). 0 = plain DPO. It keeps the chosen answers likely, so DPO on a small
    model does not drift into non-answers that are merely unlike the rejected responses."""
    ref_cache_dir: str = ""
    """Where reference log-probs are cached, keyed by dataset and model hashes; empty = `~/.cache/cai/ref_logps`."""

    def __post_init__(self):
        if not self.data.config:
            self.data.config = "prefs"
        if self.beta <= 0:
            raise InputError("must be > 0", field="beta")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise InputError("must be in [0, 0.5)", field="label_smoothing")
        if self.rpo_alpha < 0:
            raise InputError("must be >= 0", field="rpo_alpha")
        if self.robust_epsilon != "auto":
            if isinstance(self.robust_epsilon, bool) or not 0.0 <= self.robust_epsilon < 0.5:
                raise InputError(f"must be a flip rate in [0, 0.5) or auto, got {self.robust_epsilon!r} (robust "
                                 "DPO divides by 1 − 2ε)", field="robust_epsilon")
            if self.loss_type != "robust":
                raise InputError(f"only loss_type robust reads it (loss_type is {self.loss_type})",
                                 field="robust_epsilon")
        if self.loss_type == "robust" and self.label_smoothing > 0:
            raise InputError("robust DPO takes its flip rate from robust_epsilon (one number for the dataset); "
                             "label_smoothing is cDPO's", field="label_smoothing")
        if self.loss_type == "ipo" and self.label_smoothing > 0:
            raise InputError("IPO has no label smoothing; use cdpo or robust, or set label_smoothing=0",
                             field="label_smoothing")
        if self.loss_type == "cdpo" and self.label_smoothing == 0 and not self.soft_labels:
            raise InputError("cdpo needs label_smoothing > 0 or soft_labels", field="label_smoothing")


STAGES: dict[str, type] = {"sft": SFTConfig, "rm": RMConfig, "dpo": DPOConfig}


# ---- loading lives in the shared config system (`cai.config`); re-exported for existing imports ----------

__all__ = ["STAGES", "DPOConfig", "DataConfig", "LoraConfig", "OptimConfig", "RMConfig", "RunConfig", "SFTConfig",
           "Source", "config_error", "load_config", "to_dict"]
