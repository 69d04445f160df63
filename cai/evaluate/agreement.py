"""`cai eval agreement`: how far can the AI's labels be trusted? Human–AI and human–human agreement.

1. inputs: the labelled dataset's pairs (AI label and p_chosen) and the human label store
2. per pair: the human majority (strict plurality of a / b / tie) and vote rate for the AI's choice
3. statistics, overall and per comparison principle:
   - accuracy of the AI label against the human majority (pairs whose majority is a or b);
   - Cohen's kappa between annotators (mean over annotator pairs: Light's kappa) and between the human
     majority and the AI;
   - calibration: the AI's p_chosen, binned, against the human vote rate for the AI's choice, with ECE.
4. outputs: OUT/agreement.json and OUT/calibration.png
"""
from __future__ import annotations

import itertools
import json
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cai.errors import InputError
from cai.labelui.pairs import Pair, load_pairs
from cai.labelui.store import default_db, read_labels
from cai.labelui.votes import Votes, collect_votes, human_p_a, majority


def cohen_kappa(x: list[str], y: list[str]) -> float | None:
    """Cohen's kappa of two raters on the same items (Cohen 1960): (p_o - p_e) / (1 - p_e), with p_o the
    observed agreement and p_e = sum_k p_x(k) p_y(k) the agreement expected from each rater's marginals.
    x, y: (n,) category labels. None when undefined (no items, or both raters always use one category).
    E.g. x = a a b b, y = a b b b: p_o = 3/4, p_e = (2/4)(1/4) + (2/4)(3/4) = 1/2, kappa = 1/2."""
    n = len(x)
    if n != len(y):
        raise ValueError("raters must label the same items")
    if n == 0:
        return None
    p_o = sum(a == b for a, b in zip(x, y)) / n
    cx, cy = Counter(x), Counter(y)
    p_e = sum(cx[k] * cy[k] for k in cx) / (n * n)
    return None if p_e == 1.0 else (p_o - p_e) / (1.0 - p_e)


def annotator_kappa(votes: dict[str, Votes]) -> dict[str, Any]:
    """Cohen's kappa of every annotator pair on the items both labelled, and their mean (Light 1971)."""
    per_item = [v.by for v in votes.values()]
    names = sorted({a for by in per_item for a in by})
    pairs = []
    for u, w in itertools.combinations(names, 2):
        common = [(by[u], by[w]) for by in per_item if u in by and w in by]
        k = cohen_kappa([c[0] for c in common], [c[1] for c in common])
        pairs.append({"annotators": [u, w], "n": len(common), "kappa": k})
    ks = [p["kappa"] for p in pairs if p["kappa"] is not None]
    return {"mean": sum(ks) / len(ks) if ks else None, "pairs": pairs}


def calibration_bins(points: list[tuple[float, float]], bins: int = 5, lo: float = 0.5) -> dict[str, Any]:
    """Reliability table of (p, rate) points: p = the AI's p_chosen in [lo, 1], rate = the human vote rate
    for the AI's choice. Equal-width bins over [lo, 1] (p = 1 falls in the last); per bin n, mean p and
    mean rate; ECE = sum_b n_b / N * |mean_p_b - mean_rate_b| (Naeini et al. 2015).
    E.g. points (0.55, 1), (0.65, 0), (0.95, 1) with 5 bins: bins 0 and 1 hold one point each, bin 4 one;
    ECE = (0.45 + 0.65 + 0.05) / 3."""
    width = (1.0 - lo) / bins
    acc = [[0, 0.0, 0.0] for _ in range(bins)]
    for p, rate in points:
        if not lo <= p <= 1.0:
            raise ValueError(f"p_chosen {p} outside [{lo}, 1]")
        b = min(bins - 1, int((p - lo) / width + 1e-9))
        acc[b][0] += 1
        acc[b][1] += p
        acc[b][2] += rate
    table, n_all, ece = [], len(points), 0.0
    for b, (n, sp, sr) in enumerate(acc):
        row = {"lo": round(lo + b * width, 6), "hi": round(lo + (b + 1) * width, 6), "n": n,
               "mean_p": sp / n if n else None, "human_rate": sr / n if n else None}
        if n:
            ece += n / n_all * abs(row["mean_p"] - row["human_rate"])
        table.append(row)
    return {"bins": table, "ece": ece if n_all else None, "n": n_all}


def agreement_stats(pairs: list[Pair], votes: dict[str, Votes], bins: int = 5) -> dict[str, Any]:
    """Accuracy, kappas and calibration of one set of pairs (all of them, or one principle's)."""
    maj_ai, correct, n_acc, cal = [], 0, 0, []
    for p in pairs:
        v = votes.get(p.id)
        if v is None or p.ai_choice is None:
            continue
        m = majority(v.counts)
        if m is not None:
            maj_ai.append((m, p.ai_choice))
        if m in ("a", "b"):
            n_acc += 1
            correct += m == p.ai_choice
        if p.ai_p_chosen is not None:
            rate_a = human_p_a(v.counts)
            cal.append((p.ai_p_chosen, rate_a if p.ai_choice == "a" else 1.0 - rate_a))
    sub = {p.id: votes[p.id] for p in pairs if p.id in votes}
    return {"pairs": len(pairs), "human_labelled": len(sub), "with_majority": len(maj_ai),
            "ai_accuracy": correct / n_acc if n_acc else None, "accuracy_n": n_acc,
            "kappa_human_ai": cohen_kappa([m for m, _ in maj_ai], [a for _, a in maj_ai]),
            "kappa_annotators": annotator_kappa(sub), "calibration": calibration_bins(cal, bins)}


@dataclass
class AgreementConfig:
    """Settings of `cai eval agreement`."""

    data: str = ""
    """Labelled dataset directory (written by cai rlaif, label or critique)."""
    db: str = ""
    """SQLite file of human labels; empty means DATA/human_labels.sqlite."""
    out: str = ""
    """Output directory for agreement.json and calibration.png; empty means DATA/agreement."""
    bins: int = 5
    """Calibration bins over p_chosen in [0.5, 1]."""

    def __post_init__(self):
        if not self.data:
            raise InputError("required", field="data")
        if not 1 <= self.bins <= 50:
            raise InputError("must be in 1..50", field="bins")
        if not self.db:
            self.db = str(default_db(self.data))
        if not self.out:
            self.out = str(Path(self.data) / "agreement")


def plot_calibration(cal: dict[str, Any], path: Path, title: str) -> None:
    """Reliability diagram: mean p_chosen vs human vote rate per bin (marker area ~ pairs), diagonal = ideal."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [b for b in cal["bins"] if b["n"]]
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=110)
    ax.plot([0.5, 1], [0.5, 1], "--", color="grey", lw=1, label="perfectly calibrated")
    if pts:
        most = max(b["n"] for b in pts)
        xs, ys = [b["mean_p"] for b in pts], [b["human_rate"] for b in pts]
        ax.plot(xs, ys, "-", color="#2457c5", lw=1)
        ax.scatter(xs, ys, s=[25 + 150 * b["n"] / most for b in pts], color="#2457c5", zorder=3, label="AI judge")
        for b in pts:
            ax.annotate(f"n={b['n']}", (b["mean_p"], b["human_rate"]), textcoords="offset points", xytext=(8, -4),
                        fontsize=8)
    ax.set(xlim=(0.48, 1.02), ylim=(-0.02, 1.02), xlabel="AI p_chosen (bin mean)",
           ylabel="human vote rate for the AI's choice", title=title)
    ax.legend(loc="lower right", fontsize=8, markerscale=0.5)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def eval_agreement(cfg: AgreementConfig) -> dict[str, Any]:
    """Compute the report, write OUT/agreement.json and OUT/calibration.png; return the report."""
    # 1. inputs
    pairs = load_pairs(cfg.data)
    if not Path(cfg.db).is_file():
        raise InputError("no human labels: the label store does not exist (label with `cai label-ui`)",
                         file=cfg.db, field="db")
    # 2. votes per pair
    votes, stale = collect_votes(read_labels(cfg.db), pairs)
    if not votes:
        raise InputError("the label store holds no votes on this dataset's pairs", file=cfg.db, field="db")
    # 3. statistics, overall and per principle
    report: dict[str, Any] = {"config": asdict(cfg), "stale_labels": stale,
                              "overall": agreement_stats(pairs, votes, cfg.bins)}
    groups: dict[str, list[Pair]] = defaultdict(list)
    for p in pairs:
        for pid in p.principle_ids:
            groups[pid].append(p)
    report["per_principle"] = {pid: agreement_stats(ps, votes, cfg.bins) for pid, ps in sorted(groups.items())}
    # 4. outputs
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".agreement.json.tmp"
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(out / "agreement.json")
    plot_calibration(report["overall"]["calibration"], out / "calibration.png",
                     f"AI judge vs humans ({report['overall']['calibration']['n']} pairs)")
    return report
