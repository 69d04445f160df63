"""Built-in training stages on torch + transformers + accelerate + peft: SFT, reward model, DPO, PPO and RLOO.

    from cai.train import DPOConfig, train_dpo
    train_dpo(DPOConfig(model="runs/sft", data=DataConfig(path="out/feedback")))

Modules: `losses` (pure math), `config` (one dataclass per stage), `data` (reading, TRL-style tokenisation,
batching), `common` (log-probs, checkpoints, metrics, output), `sft`/`rm`/`dpo` (the loops), `lora`, `card`,
`cli`. Importing this package does not import torch; the trainers load it when called.
"""
from cai.train.config import (
    DataConfig,
    DPOConfig,
    LoraConfig,
    OptimConfig,
    RMConfig,
    RunConfig,
    SFTConfig,
    load_config,
)
from cai.train.ppo_config import PPOConfig


def train_sft(cfg: SFTConfig, resume: bool = False):
    from cai.train.sft import train
    return train(cfg, resume)


def train_rm(cfg: RMConfig, resume: bool = False):
    from cai.train.rm import train
    return train(cfg, resume)


def train_dpo(cfg: DPOConfig, resume: bool = False):
    from cai.train.dpo import train
    return train(cfg, resume)


def train_ppo(cfg: PPOConfig, resume: bool = False, reward_fn=None):
    """PPO (or RLOO with `algorithm: rloo`). `reward_fn(prompts, responses) -> list[float]` overrides `cfg.reward`."""
    from cai.train.ppo import train
    return train(cfg, resume, reward_fn)


def train_rloo(cfg: PPOConfig, resume: bool = False, reward_fn=None):
    from cai.train.rloo import train
    return train(cfg, resume, reward_fn)


__all__ = [
    "PPOConfig",
    "DPOConfig",
    "DataConfig",
    "LoraConfig",
    "OptimConfig",
    "RMConfig",
    "RunConfig",
    "SFTConfig",
    "load_config",
    "train_dpo",
    "train_ppo",
    "train_rloo",
    "train_rm",
    "train_sft",
]
