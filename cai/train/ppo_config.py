"""Config of the RL stage: `PPOConfig` for PPO with a KL penalty (and its critic-free variant, RLOO).

Built like the other stage configs (cai/train/config.py): every field documented where it is declared,
defaults that run, `__post_init__` errors naming the field, and `load_config(PPOConfig, FILE, overrides)`
for YAML plus dotted overrides with FILE:LINE:COL errors. Imports no torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from cai.engine.config import EngineSpec
from cai.errors import InputError
from cai.train.config import LoraConfig, OptimConfig, RunConfig

JUDGE_ENGINE = EngineSpec(backend="hf", dtype="float32", no_cache=True)
"""The PPO judge's default engine: transformers in fp32 beside the vLLM rollout engine (one vLLM per
process), without the request cache (every rollout is a new response: caching would only grow the file)."""


@dataclass
class PromptDataConfig:
    path: str = ""
    """Prompts: any prompt source the other stages read (.jsonl/.json/.csv/.parquet, a cai dataset directory,
    a hub id). A `prompt` column (string or chat messages) is used; without one, the `messages` of an SFT
    set minus its final assistant turn."""
    column: str = "prompt"
    """Column holding the prompt."""
    config: str = ""
    """Dataset config (subdirectory) of a cai dataset directory; empty = the first that has prompts."""
    max_prompt_length: int = 512
    """Prompts longer than this many tokens (chat template applied) are dropped and counted."""
    limit: int = 0
    """Use only the first N prompts (0 = all)."""

    def __post_init__(self):
        if self.max_prompt_length < 1:
            raise InputError("must be >= 1", field="max_prompt_length")
        if self.limit < 0:
            raise InputError("must be >= 0", field="limit")


@dataclass
class RewardConfig:
    kind: Literal["rm", "judge", "callable"] = "callable"
    """`rm`: a reward model trained by `cai train rm`; `judge`: a d-RLAIF judge rating each response with the
    constitution's score rubric (reward in [-1, 1]); `callable`: a Python function
    `reward_fn(prompts, responses) -> list[float]` (named by `fn`, or passed to `train_ppo(cfg, reward_fn=...)`)."""
    model: str = ""
    """The reward model directory (kind rm) or the judge model (kind judge)."""
    normalize: bool = True
    """Apply the RM's gain and bias (`reward_normalization.json`, written by `cai train rm`) so SFT samples
    score mean 0, std 1."""
    fn: str = ""
    """`module:function` or `path/to/file.py:function` for kind callable."""
    constitution: str = "harmless"
    """Constitution whose score rubric the judge applies (kind judge)."""
    judge_engine: EngineSpec | Literal["hf", "vllm", "openai"] = JUDGE_ENGINE
    """How the judge (kind judge) runs: an engine section like any stage's `engine:` (backend, base_urls,
    dtype, max_model_len, args), or only a backend name. vLLM allows one engine per process, so backend
    `vllm` needs `rollout.engine: hf`; `openai` needs `base_urls` (a server that serves `model`)."""
    batch_size: int = 16
    """Sequences per reward-model forward."""

    def __post_init__(self):
        if isinstance(self.judge_engine, str):  # a backend name alone: that backend with the defaults
            if self.judge_engine == "openai":
                raise InputError("the openai backend needs base_urls: give judge_engine as a mapping, e.g. "
                                 "{backend: openai, base_urls: [http://HOST:PORT/v1]}", field="judge_engine")
            self.judge_engine = EngineSpec(backend=self.judge_engine,
                                           dtype=JUDGE_ENGINE.dtype if self.judge_engine == "hf" else "auto")
        if not self.judge_engine.backend:
            raise InputError("name the backend (hf, vllm or openai): the rollout engine decides what may run "
                             "beside it", field="judge_engine.backend")
        if self.kind in ("rm", "judge") and not self.model:
            raise InputError(f"kind {self.kind} needs a model", field="model")
        if self.kind == "callable" and self.model:
            raise InputError("a model is set but kind is callable: set kind rm (reward model) or judge",
                             field="kind")
        if self.batch_size < 1:
            raise InputError("must be >= 1", field="batch_size")


@dataclass
class RolloutConfig:
    engine: Literal["vllm", "hf"] = "vllm"
    """Rollout engine: in-process vLLM (weights synced after every update), or transformers as fallback."""
    temperature: float = 0.7
    """Sampling temperature; training log-probs divide the logits by the same value (Huang et al. 2024)."""
    max_new_tokens: int = 64
    """Response length limit; a response without EOS by then gets `ppo.no_eos_score`."""
    dtype: Literal["float32", "bfloat16", "auto"] = "float32"
    """Engine weight dtype. float32 keeps rollout log-probs equal to the trainer's (fp32) within 1e-4."""
    kv_cache_mb: int = 512
    """vLLM KV-cache size in MiB (a fixed size skips vLLM's memory profiling)."""
    max_model_len: int = 2048
    """Engine context length."""

    def __post_init__(self):
        if self.temperature <= 0:
            raise InputError("must be > 0 (log-probs are taken at the sampling temperature)", field="temperature")
        if self.max_new_tokens < 1:
            raise InputError("must be >= 1", field="max_new_tokens")
        if self.kv_cache_mb < 16:
            raise InputError("must be >= 16", field="kv_cache_mb")


@dataclass
class PPOHyper:
    epochs: int = 4
    """Optimisation passes over each rollout batch."""
    num_minibatches: int = 4
    """Minibatches per epoch (one optimizer step each)."""
    clip: float = 0.2
    """Policy ratio clip ε."""
    vf_clip: float = 0.2
    """Value clip around the rollout-time values."""
    vf_coef: float = 0.1
    """Weight of the value loss."""
    gamma: float = 1.0
    """GAE discount."""
    lam: float = 0.95
    """GAE λ."""
    beta: float = 0.05
    """KL coefficient β (the initial one with `adaptive_kl`)."""
    adaptive_kl: bool = False
    """Adapt β towards `kl_target` (Ziegler et al. 2019)."""
    kl_target: float = 6.0
    """Target sequence KL (nats) of the adaptive controller."""
    kl_horizon: int = 10000
    """Horizon (episodes) of the adaptive controller."""
    no_eos_score: float = -1.0
    """Score of a response with no EOS within `rollout.max_new_tokens` (the EOS trick)."""
    penalize_no_eos: bool = True
    """Apply `no_eos_score`; false keeps the reward's score."""
    whiten_advantages: bool = True
    """Whiten PPO advantages over the batch."""
    rloo_k: int = 4
    """Samples per prompt for RLOO (PPO samples one)."""

    def __post_init__(self):
        for name in ("epochs", "num_minibatches", "kl_horizon"):
            if getattr(self, name) < 1:
                raise InputError("must be >= 1", field=name)
        for name in ("clip", "vf_clip", "kl_target"):
            if getattr(self, name) <= 0:
                raise InputError("must be > 0", field=name)
        if self.vf_coef < 0 or self.beta < 0:
            raise InputError("must be >= 0", field="vf_coef" if self.vf_coef < 0 else "beta")
        if not 0 <= self.gamma <= 1 or not 0 <= self.lam <= 1:
            raise InputError("must be in [0, 1]", field="gamma" if not 0 <= self.gamma <= 1 else "lam")
        if self.rloo_k < 2:
            raise InputError("must be >= 2 (the leave-one-out baseline needs another sample)", field="rloo_k")


@dataclass
class MonitorConfig:
    sample_every: int = 10
    """Write decoded samples to `samples.jsonl` every N iterations (0 = never)."""
    samples: int = 4
    """Samples written each time."""
    corr_window: int = 8
    """Iterations pooled for the reward–length correlation."""
    kl_warn: float = 10.0
    """Warn when the mean sequence KL to the reference exceeds this (nats)."""
    length_corr_warn: float = 0.5
    """Warn when the reward–length correlation over the window exceeds this (length hacking)."""

    def __post_init__(self):
        if self.sample_every < 0 or self.samples < 0:
            raise InputError("must be >= 0", field="sample_every" if self.sample_every < 0 else "samples")
        if self.corr_window < 1:
            raise InputError("must be >= 1", field="corr_window")


@dataclass
class PPOConfig:
    """RL fine-tuning of a policy against a reward with a per-token KL penalty to a frozen reference."""

    model: str = "smollm2-135m"
    """Policy to train (the SFT output)."""
    algorithm: Literal["ppo", "rloo"] = "ppo"
    """`ppo` (critic, per-token GAE) or `rloo` (K samples per prompt, leave-one-out baseline, no critic)."""
    ref_model: str = ""
    """Frozen reference; empty = the initial `model` (with LoRA: the base with the adapter disabled)."""
    value_model: str = ""
    """Initial value model; empty = the reward model (kind rm), else the policy (fresh value head)."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """Where the score comes from."""
    data: PromptDataConfig = field(default_factory=PromptDataConfig)
    """Prompts."""
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    """Sampling."""
    ppo: PPOHyper = field(default_factory=PPOHyper)
    """PPO/RLOO hyper-parameters (Huang et al. 2024 defaults)."""
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    """Reward-hacking monitors."""
    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="runs/ppo", batch_size=16,
                                                             micro_batch_size=4, save_every=20))
    """Iterations (`max_steps`; `batch_size` = prompts per iteration), checkpoints and output."""
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=3e-6, scheduler="constant"))
    """Optimizer of policy (and value) parameters."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """Optional LoRA adapter on the policy (merged into the engine's weights at each sync)."""

    def __post_init__(self):
        if self.reward.kind == "judge" and self.reward.judge_engine.backend == "vllm" and self.rollout.engine == "vllm":
            raise InputError("vLLM allows one engine per process: use judge_engine hf (or rollout.engine hf)",
                             field="reward.judge_engine")
        rollouts = self.run.batch_size * (self.ppo.rloo_k if self.algorithm == "rloo" else 1)
        if rollouts % self.ppo.num_minibatches:
            raise InputError(f"{rollouts} rollouts per iteration do not split into {self.ppo.num_minibatches} "
                             "minibatches", field="ppo.num_minibatches")

    @property
    def rollouts_per_step(self) -> int:
        return self.run.batch_size * (self.ppo.rloo_k if self.algorithm == "rloo" else 1)
