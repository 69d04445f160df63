"""Figures (matplotlib, Agg): the report's training curves and reward versus length as PNG bytes, and the
`training.png` each trainer writes beside its model."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from cai.report.collect import metric_groups
from cai.train.metrics import read_metrics


def _fig():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    _fig().close(fig)
    return buf.getvalue()


def training_curves(stage: str, metrics: list[dict]) -> bytes | None:
    """One row of panels (loss, reward, KL, length; those the trainer logged) against the step; train
    values as lines, held-out (`eval/...`) values as points."""
    groups = metric_groups(metrics)
    if not groups:
        return None
    plt = _fig()
    fig, axes = plt.subplots(1, len(groups), figsize=(3.6 * len(groups), 2.8), squeeze=False)
    for ax, (title, keys) in zip(axes[0], groups.items()):
        for k in keys[:6]:
            pts = [(r["step"], r[k]) for r in metrics if isinstance(r.get(k), (int, float)) and "step" in r]
            if not pts:
                continue
            xs, ys = zip(*pts)
            if k.startswith("eval/"):
                ax.plot(xs, ys, "o", ms=4, label=k)
            else:
                ax.plot(xs, ys, lw=1.2, label=k)
        ax.set_title(title, fontsize=9)
        ax.ticklabel_format(axis="y", useOffset=False)  # a loss near ln 2 reads as 0.6931, not 1e-7 + 6.9e-1
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    fig.suptitle(stage, fontsize=10)
    return _png(fig)


def reward_vs_length(scatter: dict[str, Any]) -> bytes | None:
    pts = scatter["points"] if scatter else []
    if not pts:
        return None
    plt = _fig()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    xs, ys = zip(*pts)
    ax.scatter(xs, ys, s=10, alpha=0.5)
    if len(set(xs)) > 1:  # least-squares line: its slope is the length bias
        n = len(xs)
        mx, my = sum(xs) / n, sum(ys) / n
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
        lo, hi = min(xs), max(xs)
        ax.plot([lo, hi], [my + slope * (lo - mx), my + slope * (hi - mx)], "r-", lw=1,
                label=f"slope {slope:.3g} per word")
        ax.legend(fontsize=7)
    ax.set_xlabel(scatter["x"], fontsize=8)
    ax.set_ylabel(scatter["y"], fontsize=8)
    ax.set_title(f"reward vs length ({scatter['source']})", fontsize=9)
    return _png(fig)


def plot_metrics(output_dir: str | Path, keys: list[str], title: str) -> Path:
    """A PNG of the loss and key metrics against the step (train lines, eval points)."""
    plt = _fig()
    recs = read_metrics(Path(output_dir) / "metrics.jsonl")
    keys = [k for k in keys if any(k in r or f"eval/{k}" in r for r in recs)]
    fig, axes = plt.subplots(len(keys), 1, figsize=(7, 2.2 * max(1, len(keys))), squeeze=False, sharex=True)
    for ax, k in zip(axes[:, 0], keys):
        pts = [(r["step"], r[k]) for r in recs if k in r]
        if pts:
            ax.plot(*zip(*pts), label="train", lw=1)
        ev = [(r["step"], r[f"eval/{k}"]) for r in recs if f"eval/{k}" in r]
        if ev:
            ax.plot(*zip(*ev), "o-", label="eval", ms=3)
        ax.set_ylabel(k, fontsize=8)
        ax.legend(fontsize=7)
    axes[-1, 0].set_xlabel("step")
    fig.suptitle(title)
    fig.tight_layout()
    out = Path(output_dir) / "training.png"
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out

