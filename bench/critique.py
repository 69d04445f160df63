"""Throughput of the SL-CAI critique pipeline (issue 4).

    python bench/critique.py                       # 64 red-team prompts, 2 rounds, SmolLM2, vLLM
    python bench/critique.py --prompts 16 --max-tokens 64 --hf-prompts 8    # a quicker look

Prints, measured in one run on one machine:
  ratio_vs_raw_vllm=     pipeline generated tok/s / tok/s of ONE raw vLLM `generate` over a batch of the
                         same size (the same prompts, sampling params and seeds): the cost of the
                         conversation feed (goal >= 0.9)
  ratio_vs_hf_pipeline=  vLLM pipeline tok/s / the same pipeline on the hf engine (goal >= 1.8); the hf
                         pipeline runs in a subprocess (vLLM allows one engine per process), on the first
                         --hf-prompts prompts because it is slow on CPU
No request cache is used: every token is generated.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PROMPTS = str(REPO / "data" / "red_team.jsonl")


def pipeline(engine_name: str, model: str, n: int, rounds: int, max_tokens: int, engine=None) -> dict:
    """One SL-CAI run with no request cache; returns tokens, seconds and tok/s of the conversation feed."""
    from cai.critique import CritiqueConfig, critique
    from cai.engine import SamplingParams, make_engine
    from cai.engine.cached import CachedEngine

    sp = SamplingParams(temperature=0.7, max_tokens=max_tokens)
    engine = engine or make_engine(engine_name, model)
    with tempfile.TemporaryDirectory() as out:
        m = critique(prompts=PROMPTS, limit=n, out=out, engine=CachedEngine(engine, None), progress=False,
                     config=CritiqueConfig(rounds=rounds, answer=sp, critique=sp, revision=sp))
    return {"engine": engine_name, "prompts": n, "tokens": m["generated_tokens"], "seconds": m["seconds"],
            "tok_s": m["generated_tokens"] / m["seconds"]}


def raw_generate(engine, n: int, max_tokens: int) -> dict:
    """One `generate` call over n answer prompts: same prompts, params and per-request seeds as the answer step."""
    from cai.data.sources import as_messages, load_prompts
    from cai.engine import SamplingParams
    from cai.stage import request_seed

    rows = load_prompts(PROMPTS, limit=n)
    prompts = [engine.format_chat(as_messages(r["prompt"])) for r in rows]
    params = [SamplingParams(temperature=0.7, max_tokens=max_tokens, seed=request_seed(0, f"{r['id']}:answer:0"))
              for r in rows]
    t0 = time.perf_counter()
    res = engine.generate(prompts, params)
    seconds = time.perf_counter() - t0
    tokens = sum(len(r.outputs[0].token_ids) for r in res if r.ok)
    return {"prompts": n, "tokens": tokens, "seconds": round(seconds, 2), "tok_s": tokens / seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--hf-prompts", type=int, default=16, help="prompts for the (slow) hf pipeline; 0 skips it")
    ap.add_argument("--hf-only", action="store_true", help=argparse.SUPPRESS)  # the subprocess half
    a = ap.parse_args()

    if a.hf_only:
        print("HF_RESULT=" + json.dumps(pipeline("hf", a.model, a.hf_prompts, a.rounds, a.max_tokens)))
        return

    from cai.engine import make_engine
    engine = make_engine("vllm", a.model)
    raw_generate(engine, 4, 8)  # warm-up: first-call compilation and allocation stay out of the timings
    raw = raw_generate(engine, a.prompts, a.max_tokens)
    print(f"raw_vllm: {raw}", flush=True)
    pipe = pipeline("vllm", a.model, a.prompts, a.rounds, a.max_tokens, engine=engine)
    print(f"vllm_pipeline: {pipe}")
    print(f"ratio_vs_raw_vllm={pipe['tok_s'] / raw['tok_s']:.3f}", flush=True)
    if a.hf_prompts:
        engine.close()
        r = subprocess.run([sys.executable, __file__, "--hf-only", "--model", a.model, "--hf-prompts",
                            str(a.hf_prompts), "--rounds", str(a.rounds), "--max-tokens", str(a.max_tokens)],
                           capture_output=True, text=True, env={**os.environ}, check=False)
        line = next((x for x in r.stdout.splitlines() if x.startswith("HF_RESULT=")), None)
        if line is None:
            sys.exit(f"hf pipeline failed:\n{r.stderr[-3000:]}")
        hf = json.loads(line.removeprefix("HF_RESULT="))
        print(f"hf_pipeline: {hf}")
        print(f"ratio_vs_hf_pipeline={pipe['tok_s'] / hf['tok_s']:.3f}")


if __name__ == "__main__":
    main()
