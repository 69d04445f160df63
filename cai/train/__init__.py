"""Built-in training stages on torch + transformers + accelerate + peft: SFT, reward model and DPO.

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


def train_sft(cfg: SFTConfig, resume: bool = False):
    from cai.train.sft import train
    return train(cfg, resume)


def train_rm(cfg: RMConfig, resume: bool = False):
    from cai.train.rm import train
    return train(cfg, resume)


def train_dpo(cfg: DPOConfig, resume: bool = False):
    from cai.train.dpo import train
    return train(cfg, resume)


__all__ = [
    "DPOConfig",
    "DataConfig",
    "LoraConfig",
    "OptimConfig",
    "RMConfig",
    "RunConfig",
    "SFTConfig",
    "load_config",
    "train_dpo",
    "train_rm",
    "train_sft",
]
