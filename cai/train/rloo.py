"""RLOO (Ahmadian et al. 2024): `cai train rloo` or `train_rloo(PPOConfig(...))`. The same loop and config as
PPO (cai/train/ppo.py) with `algorithm: rloo`: K samples per prompt, leave-one-out baseline, sequence-level
KL in the reward and clipped sequence ratios as in TRL's RLOOTrainer, and no value model."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from cai.train.ppo import train as train_ppo
from cai.train.ppo_config import PPOConfig


def train(cfg: PPOConfig, resume: bool = False, reward_fn=None) -> Path:
    if cfg.algorithm != "rloo":
        src = getattr(cfg, "_source", None)
        cfg = dataclasses.replace(cfg, algorithm="rloo")
        if src is not None:
            cfg._source = src
    return train_ppo(cfg, resume, reward_fn)


train_rloo = train  # the pipeline registry's entry point name (`cai.train.rloo:train_rloo`)
