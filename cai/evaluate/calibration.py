"""Contextual calibration of a pairwise judge (Zhao et al. 2021, "Calibrate Before Use", arXiv 2102.09690).

A small judge prefers one option letter whatever the responses say. Contextual calibration measures
that bias on a content-free input (both responses replaced by "N/A") for the same question and
principle, and divides it out. With both orders scored (RLAIF debiasing) a pure position bias already
cancels; calibration also removes a bias that differs between the orders or between prompts.

    python -m cai.evaluate.calibration [--data data/labels/comparisons.jsonl] [--judge M] [--out F.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from cai.constitution import load_constitution
from cai.feedback.config import DEFAULT_COMPARISONS, LabelConfig
from cai.feedback.evaluate import baselines, read_labelled
from cai.feedback.judge import Comparison, Judge
from cai.stage import add_engine_args, engine_from_args

CONTENT_FREE = "N/A"


def calibrate(p: float, p_cf: float, eps: float = 1e-6) -> float:
    """Calibrated p(first option) for two options (Zhao et al. 2021 §4, W = diag(p_cf)⁻¹, b = 0):
    q_A = p / p_cf, q_B = (1 − p) / (1 − p_cf), returned normalised as q_A / (q_A + q_B).
    A judge that gives the content-free input p_cf = 0.5 is unchanged; p = p_cf maps to 0.5."""
    p_cf = min(max(p_cf, eps), 1 - eps)
    qa, qb = p / p_cf, (1 - p) / (1 - p_cf)
    return qa / (qa + qb)


def accuracy_with_calibration(engine, constitution, rows: list[dict[str, Any]], *, seed: int = 0,
                              few_shot: bool = True) -> dict[str, Any]:
    """Judge accuracy on labelled pairs `{prompt, response_a, response_b, label}`, plain and contextually
    calibrated, in one engine batch (each pair also judged with both responses content-free)."""
    judge = Judge(engine, constitution, LabelConfig(seed=seed, few_shot=few_shot))
    real = [Comparison(key=str(i), prompt=r["prompt"], r1=r["response_a"], r2=r["response_b"])
            for i, r in enumerate(rows)]
    free = [Comparison(key=str(i), prompt=r["prompt"], r1=CONTENT_FREE, r2=CONTENT_FREE)
            for i, r in enumerate(rows)]  # same key: the same principle is sampled
    judge.judge(real + free)
    plain = calibrated = n = 0
    scored = []
    for r, c, f in zip(rows, real, free):
        if c.error or f.error:
            continue
        scored.append(r)
        want_a = r["label"] == "A"
        p_a = (c.p_ab + 1 - c.p_ba) / 2
        q_a = (calibrate(c.p_ab, f.p_ab) + 1 - calibrate(c.p_ba, f.p_ba)) / 2
        plain += (p_a >= 0.5) == want_a
        calibrated += (q_a >= 0.5) == want_a
        n += 1
    return {"n": n, "accuracy": round(plain / n, 4) if n else None,
            "accuracy_calibrated": round(calibrated / n, 4) if n else None,
            "baselines": {k: v["value"] for k, v in baselines(scored).items()}, "few_shot": few_shot,
            "judge": engine.model_id, "constitution": constitution.name}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cai.evaluate.calibration")
    p.add_argument("--data", default=DEFAULT_COMPARISONS, help="labelled pairs (default: the shipped set)")
    p.add_argument("--constitution", default="harmless")
    p.add_argument("--out", default=None)
    add_engine_args(p, model_flag="--judge")
    a = p.parse_args(argv)
    engine = engine_from_args(a)
    rows, c = read_labelled(a.data), load_constitution(a.constitution)
    res = [accuracy_with_calibration(engine, c, rows, few_shot=fs) for fs in (True, False)]
    print(json.dumps(res, indent=2))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
