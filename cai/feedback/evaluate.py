"""`cai eval judge`: how good is a judge? Accuracy, log-likelihood and calibration on labelled pairs,
next to two judges that read nothing: "prefer the longer answer" and "prefer the answer shown first".

Input is JSONL `{prompt, response_a, response_b, label: "A"|"B"}` (label: the better response; the
shipped set is data/labels/comparisons.jsonl). Each pair is judged exactly as `cai label` would (same
prompts, both orders, sampled principle). A judge is only worth its labels where it beats both
baselines: a set that the longer answer solves measures length, not judgement.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from cai.config import core
from cai.constitution import load_constitution
from cai.data.sources import read_rows
from cai.engine.base import Engine
from cai.engine.config import EngineConfig, engine_config
from cai.errors import InputError
from cai.evaluate.stats import wilson_bounds
from cai.feedback.config import EvalJudgeStage, LabelConfig
from cai.feedback.judge import Comparison, Judge
from cai.feedback.label import check_prompt, skip_reason
from cai.feedback.soft_labels import Preference
from cai.stage import as_engine, print_summary

BINS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
CONFIDENCE = 0.95


def read_labelled(path: str) -> list[dict[str, Any]]:
    rows = read_rows(path)
    if not rows:
        raise InputError("no labelled pairs: the file is empty", file=path)
    out, seen = [], set()
    for i, (line, row) in enumerate(rows):
        for col in ("prompt", "response_a", "response_b", "label"):
            if col not in row:
                raise InputError(f"missing column {col!r}", file=path, line=line, field=col)
        if row["label"] not in ("A", "B"):
            raise InputError(f"label must be \"A\" or \"B\", got {row['label']!r}", file=path, line=line,
                             field="label")
        check_prompt(row["prompt"], path, line)
        rid = str(row.get("id", i))
        if rid in seen:  # results are matched to rows by id
            raise InputError(f"duplicate pair id {rid!r}", file=path, line=line, field="id")
        seen.add(rid)
        out.append({**row, "id": rid, "line": line})
    return out


def _wilson(successes: float, n: int, confidence: float = CONFIDENCE) -> list[float] | None:
    """`stats.wilson_bounds` rounded to 4 digits and kept in [0, 1]; None for no pairs. `successes` may be
    fractional (a tie credited 0.5)."""
    if n == 0:
        return None
    lo, hi = wilson_bounds(successes, n, confidence)
    return [round(max(0.0, lo), 4), round(min(1.0, hi), 4)]


def _rate(credits: list[float]) -> dict[str, Any]:
    """A rate over pairs with its n and Wilson interval: `{value, ci, n}`."""
    n = len(credits)
    return {"value": round(sum(credits) / n, 4) if n else None, "ci": _wilson(sum(credits), n), "n": n}


def n_words(text: str) -> int:
    return len(text.split())


def longer_credit(row: dict[str, Any], pick_a: bool) -> float:
    """1 when the picked response of a pair has more words than the other, 0 when fewer, 0.5 on a tie (a
    coin flip's expectation)."""
    la, lb = n_words(row["response_a"]), n_words(row["response_b"])
    if la == lb:
        return 0.5
    return float((la > lb) == pick_a)


def prefer_longer(row: dict[str, Any]) -> float:
    """Credit of the rule "the answer with more words is better" on one labelled pair: 1 when the label
    names the longer response, 0 when it names the shorter, 0.5 on a tie."""
    return longer_credit(row, row["label"] == "A")


def prefer_first(row: dict[str, Any]) -> float:
    """Credit of the rule "the answer shown first is better" in the file's order (response_a first): 1 when
    the label is A. Averaged over both orders, as `cai label` does, this rule says 0.5 on every pair."""
    return float(row["label"] == "A")


def baselines(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Accuracy of the two content-blind judges on the same labelled pairs, each `{value, ci, n}`."""
    return {"prefer_longer": _rate([prefer_longer(r) for r in rows]),
            "prefer_first": _rate([prefer_first(r) for r in rows])}


def _fmt_rate(r: dict[str, Any]) -> str:
    if r["value"] is None:
        return "-"
    return f"{r['value']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}] of {r['n']}"


def _mean(xs: list) -> float | None:
    """Mean rounded to 4 places; None when there is nothing to average (e.g. one order: no consistency)."""
    return round(sum(xs) / len(xs), 4) if xs else None


def _summary(items: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(items)
    if not n:
        return {"n": 0, "accuracy": None, "mean_loglik": None}
    return {"n": n, "accuracy": round(sum(x["correct"] for x in items) / n, 4),
            "mean_loglik": round(sum(x["loglik"] for x in items) / n, 4)}


def calibration(items: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], float]:
    """Bins of the judge's confidence in its own choice (p_chosen in [0.5, 1]); ECE over the bins."""
    bins, ece = [], 0.0
    for lo, hi in zip(BINS, BINS[1:]):
        xs = [x for x in items if lo <= x["confidence"] < hi or (hi == 1.0 and x["confidence"] == 1.0)]
        if not xs:
            bins.append({"lo": lo, "hi": hi, "n": 0, "confidence": None, "accuracy": None})
            continue
        conf = sum(x["confidence"] for x in xs) / len(xs)
        acc = sum(x["correct"] for x in xs) / len(xs)
        ece += len(xs) / max(len(items), 1) * abs(conf - acc)
        bins.append({"lo": lo, "hi": hi, "n": len(xs), "confidence": round(conf, 4), "accuracy": round(acc, 4)})
    return bins, round(ece, 4)


def eval_judge(*, data: str, constitution: str, config: LabelConfig | None = None, out: str | None = None,
               engine: Engine | EngineConfig) -> dict[str, Any]:
    """Python API of `cai eval judge`; returns the report (also written to `out` when given)."""

    cfg = config or LabelConfig()
    c = load_constitution(constitution)
    rows = read_labelled(data)
    engine = as_engine(engine, seed=cfg.seed)  # `out` is a report file, not a run directory
    judge = Judge(engine, c, cfg)
    skipped = [r["id"] for r in rows if skip_reason(r)]
    cmps = judge.judge([Comparison(key=r["id"], prompt=r["prompt"], r1=r["response_a"], r2=r["response_b"])
                        for r in rows if not skip_reason(r)])
    by_id = {r["id"]: r for r in rows}
    items, errors = [], []
    for cmp in cmps:
        if cmp.error:
            errors.append({"id": cmp.key, "error": cmp.error})
            continue
        pref = Preference(cmp.p_ab, cmp.p_ba if cmp.p_ba is not None else 1.0 - cmp.p_ab)
        p_a = pref.p1  # p(response_a better)
        label_a = by_id[cmp.key]["label"] == "A"
        p_correct = p_a if label_a else 1.0 - p_a
        items.append({"id": cmp.key, "p_a": p_a, "p_ab": cmp.p_ab, "p_ba": cmp.p_ba, "label": by_id[cmp.key]["label"],
                      "correct": (p_a >= 0.5) == label_a, "loglik": math.log(max(p_correct, 1e-12)),
                      "confidence": pref.p_chosen,
                      "order_consistent": None if cmp.p_ba is None else pref.order_consistent,
                      "principle_ids": [p.id for p in cmp.principles],
                      "first_order_correct": (cmp.p_ab >= 0.5) == label_a})
    per_principle = defaultdict(list)
    for x in items:
        for pid in set(x["principle_ids"]):
            per_principle[pid].append(x)
    bins, ece = calibration(items)
    n = len(items)
    consistent = [float(x["order_consistent"]) for x in items if x["order_consistent"] is not None]
    rates = {"accuracy": _rate([float(x["correct"]) for x in items]), "position_consistency": _rate(consistent),
             **baselines([by_id[x["id"]] for x in items]),  # the baselines on the pairs the judge scored
             # how often the judge's own choice is the longer answer: near 1 is a length judge
             "picks_longer": _rate([longer_credit(by_id[x["id"]], x["p_a"] >= 0.5) for x in items])}
    report = {"judge": engine.model_id, "judge_hash": engine.model_hash, "constitution": c.name,
              "constitution_hash": c.hash, "data": str(data), "config": cfg.to_dict(),
              **_summary(items),
              "accuracy_first_order_only": round(sum(x["first_order_correct"] for x in items) / n, 4) if n else None,
              "position_consistency": _mean([x["order_consistent"] for x in items if x["order_consistent"] is not None]),
              "label_share_a": round(sum(x["label"] == "A" for x in items) / n, 4) if n else None,
              "rates": rates,
              "per_principle": {k: _summary(v) for k, v in sorted(per_principle.items())},
              "calibration": {"bins": bins, "ece": ece},
              "skipped": skipped, "errors": errors, "items": items}
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=2))
    ci = f"{CONFIDENCE:.0%} Wilson interval"
    print_summary("eval judge", [("pairs", len(rows)), (f"accuracy ({ci})", _fmt_rate(rates["accuracy"])),
                                 ("prefer the longer", _fmt_rate(rates["prefer_longer"])),
                                 ("prefer the first shown", _fmt_rate(rates["prefer_first"])),
                                 ("position consistency", _fmt_rate(rates["position_consistency"])),
                                 ("judge picks the longer", _fmt_rate(rates["picks_longer"])),
                                 ("mean loglik", report["mean_loglik"]), ("ece", ece),
                                 ("skipped", len(skipped)), ("errors", len(errors)), ("out", out)])
    return report


def run_eval_judge(cfg: EvalJudgeStage) -> dict[str, Any]:
    """Run `eval_judge` from its stage config (`cai eval judge`)."""
    return eval_judge(data=cfg.data, constitution=cfg.constitution, config=core(LabelConfig, cfg),
                      out=cfg.out or None, engine=engine_config(cfg.judge, cfg.engine))
