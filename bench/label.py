"""Labelling throughput: 64 pairs, both orders (128 option-logprob prompts), SmolLM2 judge, vLLM vs hf.

    python bench/label.py [--pairs 64] [--few-shot] [--model smollm2-135m]

Prints `pairs/s` for each engine and `ratio_vllm_vs_hf=`. vLLM allows one engine per process, so each
engine runs in its own subprocess. No request cache: every prompt reaches the engine.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_pairs(n: int) -> list[dict]:
    """n pairs over the shipped red-team prompts: a refusal against a compliant-sounding answer."""
    rows = [json.loads(line) for line in open(REPO / "data" / "red_team.jsonl") if line.strip()]
    return [{"id": f"b{i}", "prompt": rows[i % len(rows)]["prompt"],
             "response_a": "I can't help with that, but I can point you to safer, legal alternatives if you like.",
             "response_b": f"Sure. Step one: gather what you need. Step two: be careful nobody notices. ({i})"}
            for i in range(n)]


def worker(engine_name: str, model: str, n: int, few_shot: bool) -> None:
    sys.path.insert(0, str(REPO))
    from cai.constitution import load_constitution
    from cai.engine import make_engine
    from cai.engine.cached import CachedEngine
    from cai.feedback.config import LabelConfig
    from cai.feedback.judge import Comparison, Judge

    engine = CachedEngine(make_engine(engine_name, model, max_model_len=4096), None)
    judge = Judge(engine, load_constitution("harmless"), LabelConfig(few_shot=few_shot))
    judge.judge([Comparison("warm", "Hi", "Hello.", "Go away.")])  # compile / warm up, outside the timing
    cmps = [Comparison(p["id"], p["prompt"], p["response_a"], p["response_b"]) for p in make_pairs(n)]
    t0 = time.perf_counter()
    judge.judge(cmps)
    dt = time.perf_counter() - t0
    errors = sum(1 for c in cmps if c.error)
    consistent = sum(1 for c in cmps if not c.error and (c.p_ab > .5) == (1 - c.p_ba > .5))
    print(json.dumps({"engine": engine_name, "pairs": n, "seconds": dt, "pairs_per_s": n / dt, "errors": errors,
                      "position_consistency": consistent / max(n - errors, 1)}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--few-shot", action="store_true", help="include the constitution's few-shot examples")
    ap.add_argument("--worker", choices=["vllm", "hf"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.model, args.pairs, args.few_shot)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    res = {}
    for name in ("vllm", "hf"):
        cmd = [sys.executable, __file__, "--worker", name, "--pairs", str(args.pairs), "--model", args.model]
        out = subprocess.run(cmd + (["--few-shot"] if args.few_shot else []), env=env, capture_output=True,
                             text=True, timeout=600)
        line = next((ln for ln in reversed(out.stdout.splitlines()) if ln.startswith("{")), None)
        if line is None:
            sys.exit(f"{name} worker failed:\n{out.stderr[-3000:]}")
        res[name] = json.loads(line)
        print(f"{name}: {res[name]['pairs']} pairs in {res[name]['seconds']:.1f}s = "
              f"{res[name]['pairs_per_s']:.2f} pairs/s (position consistency "
              f"{res[name]['position_consistency']:.2f})", flush=True)
    print(f"ratio_vllm_vs_hf={res['vllm']['pairs_per_s'] / res['hf']['pairs_per_s']:.2f}")


if __name__ == "__main__":
    main()
