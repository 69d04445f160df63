"""Write the detectors' answer set: real answers of SmolLM2 to harmful and benign prompts under framings.

The answers stand in for base and trained models: SmolLM2 as shipped (greedy and sampled), under the
shipped constitutions' system prompts, under the contrast framings of `constitutions/harmless.yaml`
(the benign positive "helpful, Sure!" side, the cautious negative side as a system prompt that the
model follows in its own words), under a strongly refusing system prompt, and continuing the assistant
prefixes that trained models learn ("I'm sorry, but I can't help with that." then more text, "Sure! I can
help with that." then more text, as in the quickstart's trained model). Prompts come from
`data/red_team.jsonl`, `data/helpful.jsonl` and `data/labels/extra_prompts.jsonl`, none from `data/eval/`.
Every prompt gets the greedy base answer and one framing chosen by a hash of its id.

    CAI_VLLM_CPU_MEM=0.04 PYTHONPATH=. nice -n 10 .venv/bin/python scripts/make_answer_set.py \
        --out data/labels/answers.raw.jsonl --max-tokens 80

Answers are written as they finish (a killed run keeps what it wrote), in plan order at the end.

The output has no labels: `label` and `note` are added by hand (see docs/detectors.md), `split` by
`cai.evaluate.detector_card.split_of`.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import yaml

from cai.engine import SamplingParams, make_engine

ROOT = Path(__file__).resolve().parent.parent


def _constitution(name: str) -> dict:
    return yaml.safe_load((ROOT / "constitutions" / f"{name}.yaml").read_text())


_H = _constitution("harmless")
# name -> (system prompt or None, assistant prefix or None, temperature)
SOURCES: dict[str, tuple[str | None, str | None, float]] = {
    "base-greedy": (None, None, 0.0),
    "base-sampled": (None, None, 0.8),
    "harmless-system": (_H["system_prompt"], None, 0.0),
    "hhh-system": (_constitution("hhh")["system_prompt"], None, 0.7),
    "contrast-helpful-sure": (_H["contrast"]["benign"]["positive"]["system"], "Sure!", 0.7),
    "contrast-cautious": (_H["contrast"]["benign"]["negative"]["system"], None, 0.7),
    "strict-refuser": ("You are a safety-first assistant. If a request could possibly be misused, refuse it "
                       "in one or two sentences and suggest a safe alternative. Otherwise answer briefly.",
                       None, 0.7),
    "trained-refusal-prefix": (None, "I'm sorry, but I can't help with that.", 0.7),
    "trained-sure-prefix": (None, "Sure! I can help with that.", 0.7),
}
FRAMINGS = [s for s in SOURCES if s != "base-greedy"]


def _h(s: str) -> int:
    return int(hashlib.sha256(s.encode()).hexdigest(), 16)


def prompts() -> list[dict]:
    rows = []
    for f, pset in (("data/red_team.jsonl", "harmful"), ("data/helpful.jsonl", "benign"),
                    ("data/labels/extra_prompts.jsonl", None)):
        for line in (ROOT / f).read_text().splitlines():
            r = json.loads(line)
            rows.append({"prompt_id": r["id"], "prompt_set": pset or r["set"], "prompt": r["prompt"]})
    return rows


def plan(rows: list[dict]) -> list[dict]:
    """(prompt, source) pairs: the greedy base answer and one framing per prompt."""
    jobs = []
    for r in rows:
        for s in ("base-greedy", FRAMINGS[_h(r["prompt_id"]) % len(FRAMINGS)]):
            jobs.append({**r, "source": f"SmolLM2-135M-Instruct/{s}"})
    return jobs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--model", default="smollm2-135m")
    args = ap.parse_args()
    jobs = plan(prompts())
    engine = make_engine("vllm", args.model, max_model_len=1024)
    for i, j in enumerate(jobs):  # 1. every request to the engine at once
        system, prefix, temp = SOURCES[j["source"].split("/")[1]]
        msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": j["prompt"]}]
        if prefix:
            msgs.append({"role": "assistant", "content": prefix})
        engine.submit(str(i), engine.format_chat(msgs, continue_final_message=bool(prefix)),
                      SamplingParams(temperature=temp, max_tokens=args.max_tokens,
                                     seed=_h(j["source"] + j["prompt_id"]) % 2**31))
    done = {}
    with open(args.out + ".partial", "w") as f:  # 2. answers as they finish
        while engine.has_unfinished():
            for key, res in engine.poll():
                if not res.ok:
                    continue
                j = jobs[int(key)]
                prefix = SOURCES[j["source"].split("/")[1]][1]
                done[int(key)] = {"id": f"a{int(key):04d}", **j,
                                  "answer": ((prefix + " ") if prefix else "") + res.text.strip()}
                f.write(json.dumps(done[int(key)], ensure_ascii=False) + "\n")
                f.flush()
                print(f"{len(done)}/{len(jobs)}", file=sys.stderr, flush=True)
    with open(args.out, "w") as f:  # 3. in plan order
        f.writelines(json.dumps(done[k], ensure_ascii=False) + "\n" for k in sorted(done))
    print(f"{len(jobs)} answers -> {args.out}")


if __name__ == "__main__":
    main()
