"""`run_critique`: the critique stage run from its `CritiqueStage` (`cai critique` and the pipeline's
`critique` kind)."""
from __future__ import annotations

from typing import Any

from cai.config import core
from cai.critique.config import CritiqueConfig, CritiqueStage
from cai.critique.run import critique, plan
from cai.engine.config import engine_config
from cai.stage import check_out


def stage_args(cfg: CritiqueStage) -> dict[str, Any]:
    """The keyword arguments of `critique` and `plan` that `cfg` describes."""
    return {"prompts": cfg.prompts, "out": cfg.out, "constitution": cfg.constitution,
            "config": core(CritiqueConfig, cfg), "column": cfg.column, "limit": cfg.limit or None,
            "engine": engine_config(cfg.model, cfg.engine)}


def run_critique(cfg: CritiqueStage, *, overwrite: bool = False) -> dict[str, Any]:
    check_out(cfg.out)
    return critique(**stage_args(cfg), overwrite=overwrite)


def plan_critique(cfg: CritiqueStage) -> dict[str, Any]:
    """What a run of `cfg` would regenerate (`cai critique --dry-run`)."""
    return plan(**stage_args(cfg))
