"""The detectors' measured quality: precision, recall and confusion on hand-labelled answers.

`data/labels/answers.jsonl` holds real model answers, each labelled by hand against the rubric in
docs/detectors.md with one of `GOLD_LABELS`. Its prompts are split in two by a hash of the prompt id
(`split_of`): the dev half was used to build `cai.evaluate.refusal`, the test half only to measure it.
`score` compares the detector's `Verdict.label` with the hand labels; `detector_card.json` (next to this
module, written by `scripts/score_detectors.py`) holds the result, and `card()` reads it so that a report
can print the detectors' precision and recall next to the rates they produce.

Binary classes: the detector's **refusal** is scored against the hand label `refusal`; its
**non_answer** against `non_answer`; its **degenerate** against `degenerate`. A **partial** refusal or
redirect is the boundary between refusal and compliance, so it counts neither way for the refusal class
(excluded from its precision and recall); `partial_flagged` says how many of them the detector calls
refusals, and `refusal_or_partial` scores the other mapping (partial counted as refusal).
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

from cai.evaluate.refusal import LABELS, detect

ROOT = Path(__file__).resolve().parent.parent.parent
LABELLED = ROOT / "data" / "labels" / "answers.jsonl"
CARD = Path(__file__).with_name("detector_card.json")

GOLD_LABELS = ("refusal", "partial", "compliance", "non_answer", "degenerate")
"""Hand labels (docs/detectors.md states the rubric)."""
POSITIVE = {"refusal": {"refusal"}, "non_answer": {"non_answer"}, "degenerate": {"degenerate"}}
"""Detector class -> the hand labels that count as that class."""
IGNORED = {"refusal": {"partial"}}
"""Detector class -> hand labels left out of its precision and recall (the boundary class)."""
SUMMARY = ("refusal", "non_answer")
"""Classes quoted at the top level of each half as {precision, recall, n}, for reports."""
TARGETS = {"refusal": {"precision": 0.9, "recall": 0.9}, "non_answer": {"precision": 0.8, "recall": 0.8}}
"""What the test half must show (issue targets); `tests/test_refusal_detector.py` asserts them."""


def split_of(prompt_id: str) -> str:
    """"dev" or "test", by the parity of the first byte of sha256(prompt id): every answer to one prompt is
    in the same half."""
    return "dev" if hashlib.sha256(prompt_id.encode()).digest()[0] % 2 == 0 else "test"


def load(path: Path | str = LABELLED) -> list[dict]:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    for r in rows:
        if r.get("label") not in GOLD_LABELS:
            raise ValueError(f"{path}: answer {r.get('id')}: label {r.get('label')!r} is not one of {GOLD_LABELS}")
        if r.get("split") != split_of(r["prompt_id"]):
            raise ValueError(f"{path}: answer {r['id']}: split {r.get('split')!r} != {split_of(r['prompt_id'])!r}")
    return rows


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def score(rows: list[dict]) -> dict:
    """Per detector class: precision, recall, tp/fp/fn and support; the confusion matrix
    (hand label -> detector label -> count); the hand-label counts; and, at the top level, each class of
    `SUMMARY` as {precision, recall, n} (n: the answers its figures are computed on, partials left out for
    refusal), the shape report readers take from `card()["test"]`."""
    pred = [detect(r["answer"]).label for r in rows]
    gold = [r["label"] for r in rows]
    classes = {cls: _binary(pred, gold, cls, pos, IGNORED.get(cls, set())) for cls, pos in POSITIVE.items()}
    classes["refusal_or_partial"] = _binary(pred, gold, "refusal", {"refusal", "partial"}, set())
    partial = [p for p, g in zip(pred, gold) if g == "partial"]
    confusion = {g: {p: sum(1 for a, b in zip(gold, pred) if a == g and b == p) for p in LABELS}
                 for g in GOLD_LABELS}
    summary = {cls: {"precision": classes[cls]["precision"], "recall": classes[cls]["recall"],
                     "n": sum(1 for g in gold if g not in IGNORED.get(cls, set()))} for cls in SUMMARY}
    return {"n": len(rows), "prompts": len({r["prompt_id"] for r in rows}), "labels": dict(Counter(gold)),
            "classes": classes, "confusion": confusion,
            "partial_flagged": {"refusal": partial.count("refusal"), "of": len(partial)}, **summary}


def _binary(pred: list[str], gold: list[str], cls: str, pos: set[str], ignored: set[str]) -> dict:
    pairs = [(p, g) for p, g in zip(pred, gold) if g not in ignored]
    tp = sum(p == cls and g in pos for p, g in pairs)
    fp = sum(p == cls and g not in pos for p, g in pairs)
    fn = sum(p != cls and g in pos for p, g in pairs)
    return {"precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn), "tp": tp, "fp": fp, "fn": fn,
            "support": tp + fn}


def build(path: Path | str = LABELLED) -> dict:
    """The card: scores on the dev and test halves, and the labelled file's sha256."""
    rows = load(path)
    return {"labelled_file": str(Path(path).resolve().relative_to(ROOT)) if Path(path).resolve().is_relative_to(ROOT)
            else str(path),
            "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest(),
            "positive": {k: sorted(v) for k, v in POSITIVE.items()},
            "dev": score([r for r in rows if r["split"] == "dev"]),
            "test": score([r for r in rows if r["split"] == "test"])}


def card() -> dict:
    """The shipped card (`detector_card.json`); quote `card()["test"]["refusal"]` (precision, recall, n)
    next to detector rates, `card()["test"]["classes"]` for tp/fp/fn."""
    return json.loads(CARD.read_text())
