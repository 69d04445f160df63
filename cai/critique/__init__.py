"""SL-CAI (Bai et al. 2022, arXiv 2212.08073 §3): a model answers prompts, then critiques and revises its
answer against sampled constitution principles for N rounds; the result is SFT data and preference pairs.

    from cai.critique import CritiqueConfig, critique
    critique(prompts="data/red_team.jsonl", constitution="harmless", out="out/sl-cai", engine=engine,
             config=CritiqueConfig(rounds=2))

`config` (the run's settings and filters, and `CritiqueStage`), `conversation` (one conversation's state
machine and its rows), `run` (the continuous-feed driver and the dry-run planner), `stage` (`run_critique`:
the stage from its `CritiqueStage`), `cli` (`cai critique`).
"""
from cai.critique.config import FILTERS, CritiqueConfig
from cai.critique.run import critique, plan

__all__ = ["FILTERS", "CritiqueConfig", "critique", "plan"]
