"""Benchmark: the same chat prompts through the vLLM and HF engines in one run.

    python bench/engines.py [--model smollm2-135m] [--prompts 64] [--max-tokens 128]

Prints tokens/s for each and `ratio_vllm_vs_hf=` (machines here are noisy: read the ratio, not the times).
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
REPO = Path(__file__).resolve().parents[1]


def run(engine, convs, params) -> tuple[int, float]:
    engine.chat(convs[:2], params.replace(max_tokens=4))  # warm-up
    t0 = time.perf_counter()
    res = engine.chat(convs, params)
    dt = time.perf_counter() - t0
    return sum(len(r.outputs[0].token_ids) for r in res), dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=128)
    args = ap.parse_args()

    from cai.data.sources import as_messages, load_prompts
    from cai.engine import SamplingParams, make_engine

    rows = load_prompts(REPO / "data" / "helpful.jsonl", limit=args.prompts)
    convs = [as_messages(r["prompt"]) for r in rows]
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens)
    vllm = make_engine("vllm", args.model, dtype="float32", max_model_len=2048)
    v_tok, v_s = run(vllm, convs, params)
    vllm.close()
    hf = make_engine("hf", args.model, dtype="float32", batch_size=args.prompts)
    h_tok, h_s = run(hf, convs, params)
    print(f"prompts={len(convs)} max_tokens={args.max_tokens} model={args.model}")
    print(f"vllm_tokens={v_tok} vllm_seconds={v_s:.1f} vllm_tokens_per_s={v_tok / v_s:.1f}")
    print(f"hf_tokens={h_tok} hf_seconds={h_s:.1f} hf_tokens_per_s={h_tok / h_s:.1f}")
    print(f"ratio_vllm_vs_hf={(v_tok / v_s) / (h_tok / h_s):.2f}")


if __name__ == "__main__":
    main()
