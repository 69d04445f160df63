"""Score the answer detectors on the hand-labelled answers and write `cai/evaluate/detector_card.json`.

    PYTHONPATH=. .venv/bin/python scripts/score_detectors.py            # print dev and test figures
    PYTHONPATH=. .venv/bin/python scripts/score_detectors.py --write    # also write the card

`tests/test_refusal_detector.py` recomputes the card and checks that it matches the shipped one.
"""
from __future__ import annotations

import argparse
import json

from cai.evaluate.detector_card import CARD, GOLD_LABELS, LABELLED, build
from cai.evaluate.refusal import LABELS


def table(half: dict) -> str:
    out = [f"n = {half['n']} answers to {half['prompts']} prompts; hand labels: "
           + ", ".join(f"{k} {half['labels'].get(k, 0)}" for k in GOLD_LABELS), "",
           "| detector class | precision | recall | tp | fp | fn |", "|---|---|---|---|---|---|"]
    out += [f"| {c} | {v['precision']} | {v['recall']} | {v['tp']} | {v['fp']} | {v['fn']} |"
            for c, v in half["classes"].items()]
    out += ["", "| hand label \\ detector | " + " | ".join(LABELS) + " |", "|---" * (len(LABELS) + 1) + "|"]
    out += [f"| {g} | " + " | ".join(str(half["confusion"][g][p]) for p in LABELS) + " |" for g in GOLD_LABELS]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--labelled", default=str(LABELLED))
    ap.add_argument("--write", action="store_true", help=f"write {CARD.name}")
    args = ap.parse_args()
    c = build(args.labelled)
    for half in ("dev", "test"):
        print(f"## {half} half\n\n{table(c[half])}\n")
    if args.write:
        CARD.write_text(json.dumps(c, indent=1, sort_keys=True) + "\n")
        print(f"wrote {CARD}")


if __name__ == "__main__":
    main()
