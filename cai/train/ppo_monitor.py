"""Reward-hacking monitors of the RL stage (Huang et al. 2024; METHOD.md, PPO): the reward–length
correlation over a window of iterations, warnings when the KL to the reference or that correlation cross a
threshold, decoded samples every N iterations (`samples.jsonl`), and the final plot of the curves.

Per-step scalars (KL, entropy, scores, lengths, clipfrac, approx_kl, value loss...) go to metrics.jsonl
through `metrics.Metrics`; this module adds what needs memory across steps or files of its own.
"""
from __future__ import annotations

import json
import math
import sys
from collections import deque
from pathlib import Path

PLOT_KEYS = ["reward/score", "reward/raw", "kl", "entropy", "length/mean", "length/no_eos_frac",
             "reward_length_corr", "clipfrac", "approx_kl", "loss/value", "logprob_gap", "beta"]


def pearson(x: list[float], y: list[float]) -> float:
    """Pearson correlation of two equal-length lists; nan when either is constant or shorter than 3."""
    n = len(x)
    if n < 3:
        return math.nan
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    if sxx == 0 or syy == 0:
        return math.nan
    return sxy / math.sqrt(sxx * syy)


class Monitors:
    """Window of (score, length) pairs, threshold warnings (printed once per crossing), samples file."""

    def __init__(self, cfg, output_dir: str | Path, main: bool, start: int, state: dict | None = None):
        self.cfg, self.main = cfg, main
        self.window: deque = deque(maxlen=cfg.corr_window)
        self.alarm = {"kl": False, "corr": False}
        self.warnings: list[str] = []
        if state:
            self.window.extend([tuple(map(tuple, w)) for w in state.get("window", [])])
            self.alarm.update(state.get("alarm", {}))
        self.path = Path(output_dir) / "samples.jsonl"
        if main and self.path.exists():  # resume: drop samples written after the checkpoint
            keep = [ln for ln in self.path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= start]
            self.path.write_text("".join(ln + "\n" for ln in keep))

    def observe(self, step: int, scores: list[float], lengths: list[int], kl: float) -> dict:
        """Add this iteration's rows; return the window's reward–length correlation, warning on crossings."""
        self.window.append((tuple(scores), tuple(lengths)))
        xs = [s for w in self.window for s in w[0]]
        ys = [float(n) for w in self.window for n in w[1]]
        corr = pearson(xs, ys)
        self._check("kl", step, kl > self.cfg.kl_warn,
                    f"KL to the reference {kl:.3g} nats exceeds monitor.kl_warn={self.cfg.kl_warn}")
        self._check("corr", step, not math.isnan(corr) and corr > self.cfg.length_corr_warn,
                    f"reward–length correlation {corr:.2f} over the last {len(self.window)} iterations exceeds "
                    f"monitor.length_corr_warn={self.cfg.length_corr_warn} (the policy may be buying reward "
                    "with length)")
        return {"reward_length_corr": corr}

    def _check(self, key: str, step: int, crossed: bool, message: str) -> None:
        if crossed and not self.alarm[key]:
            line = f"cai train ppo: warning: step {step}: {message}"
            self.warnings.append(line)
            if self.main:
                print(line, file=sys.stderr)
        self.alarm[key] = crossed

    def samples(self, step: int, prompts: list, texts: list[str], scores: list[float]) -> None:
        """Decoded samples every `sample_every` iterations (main process)."""
        every, n = self.cfg.sample_every, self.cfg.samples
        if not self.main or not every or not n or step % every:
            return
        with open(self.path, "a") as fh:
            for p, t, s in list(zip(prompts, texts, scores))[:n]:
                fh.write(json.dumps({"step": step, "prompt": p, "response": t, "score": s}, ensure_ascii=False) + "\n")

    def state(self) -> dict:
        return {"window": [list(map(list, w)) for w in self.window], "alarm": dict(self.alarm)}
