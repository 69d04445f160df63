"""Benchmark: engine start-up, and the same chat prompts through the vLLM and HF engines in one run.

    python bench/engines.py [--model smollm2-135m] [--prompts 64] [--max-tokens 128]
    python bench/engines.py --start-only --variants '{}' '{"enforce_eager": false}' '{"dtype": "bfloat16"}'

Prints
  engine_start_s_first=  seconds to open the vLLM engine in a new process with an empty vLLM cache dir
                         (`import vllm` included, model conversion excluded)
  engine_start_s_again=  the same in a second new process, reusing that cache dir (what every later
                         command pays); each also prints the process's generation tok/s on --prompts prompts
  ratio_vllm_vs_hf=      vLLM tok/s / HF tok/s on the same prompts (machines here are noisy: read ratios)
With --variants, each JSON object of engine arguments gets its own first/again pair and tok/s, and
`tok_s_ratio_vs_first_variant=` compares their throughput.
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

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def run(engine, convs, params) -> tuple[int, float]:
    engine.chat(convs[:2], params.replace(max_tokens=4))  # warm-up
    t0 = time.perf_counter()
    res = engine.chat(convs, params)
    dt = time.perf_counter() - t0
    return sum(len(r.outputs[0].token_ids) for r in res), dt


def _convs(n: int):
    from cai.data.sources import as_messages, load_prompts
    return [as_messages(r["prompt"]) for r in load_prompts(REPO / "data" / "helpful.jsonl", limit=n)]


def probe(model: str, engine_args: dict, n: int, max_tokens: int) -> dict:
    """In this (new) process: time opening the engine, then its tok/s."""
    from cai.models import resolve_model
    resolve_model(model)  # a one-time conversion is not engine start-up
    t0 = time.perf_counter()
    from cai.engine import SamplingParams, make_engine
    engine = make_engine("vllm", model, **engine_args)
    start = time.perf_counter() - t0
    tok, s = run(engine, _convs(n), SamplingParams(temperature=0.0, max_tokens=max_tokens))
    return {"start_s": round(start, 1), "tok_s": round(tok / s, 1), "tokens": tok, "dtype": engine.dtype}


def start_pair(a, engine_args: dict) -> tuple[dict, dict]:
    """Two new processes sharing one fresh vLLM cache dir: the first fills it, the second reuses it."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "VLLM_CACHE_ROOT": cache}
        out = []
        for _ in range(2):
            r = subprocess.run([sys.executable, __file__, "--probe", json.dumps(engine_args), "--model", a.model,
                                "--prompts", str(a.prompts), "--max-tokens", str(a.max_tokens),
                                "--max-model-len", str(a.max_model_len)],
                               capture_output=True, text=True, env=env, check=False)
            line = next((x for x in r.stdout.splitlines() if x.startswith("PROBE=")), None)
            if line is None:
                sys.exit(f"engine probe failed:\n{r.stderr[-3000:]}")
            out.append(json.loads(line.removeprefix("PROBE=")))
    return out[0], out[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--start-only", action="store_true", help="only the start-up pairs, no HF comparison")
    ap.add_argument("--variants", nargs="*", default=["{}"], help="JSON engine-argument objects to compare")
    ap.add_argument("--probe", default=None, help=argparse.SUPPRESS)  # the subprocess half
    args = ap.parse_args()

    if args.probe is not None:
        engine_args = {"max_model_len": args.max_model_len, **json.loads(args.probe)}
        print("PROBE=" + json.dumps(probe(args.model, engine_args, args.prompts, args.max_tokens)))
        return

    first_tok = None
    for v in args.variants:
        first, again = start_pair(args, json.loads(v))
        print(f"variant={v} dtype={first['dtype']}")
        print(f"engine_start_s_first={first['start_s']} engine_start_s_again={again['start_s']} "
              f"tok_s_first={first['tok_s']} tok_s_again={again['tok_s']}", flush=True)
        first_tok = first_tok or again["tok_s"]
        if len(args.variants) > 1:
            print(f"tok_s_ratio_vs_first_variant={again['tok_s'] / first_tok:.3f}", flush=True)
    if args.start_only:
        return

    from cai.engine import SamplingParams, make_engine
    convs = _convs(args.prompts)
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens)
    vllm = make_engine("vllm", args.model, dtype="float32", max_model_len=args.max_model_len)
    v_tok, v_s = run(vllm, convs, params)
    vllm.close()
    hf = make_engine("hf", args.model, dtype="float32", batch_size=args.prompts, max_model_len=args.max_model_len)
    h_tok, h_s = run(hf, convs, params)
    print(f"prompts={len(convs)} max_tokens={args.max_tokens} model={args.model}")
    print(f"vllm_tokens={v_tok} vllm_seconds={v_s:.1f} vllm_tokens_per_s={v_tok / v_s:.1f}")
    print(f"hf_tokens={h_tok} hf_seconds={h_s:.1f} hf_tokens_per_s={h_tok / h_s:.1f}")
    print(f"ratio_vllm_vs_hf={(v_tok / v_s) / (h_tok / h_s):.2f}")


if __name__ == "__main__":
    main()
