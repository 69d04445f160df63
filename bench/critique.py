"""Throughput of the SL-CAI critique pipeline against the engine's own limit.

    python bench/critique.py                       # 64 red-team prompts, the default CritiqueConfig, SmolLM2, vLLM
    python bench/critique.py --prompts 16 --hf-prompts 0     # a quicker look

Prints, measured in one run on one machine:
  ratio_vs_replay=       pipeline generated tok/s / tok/s of the SAME engine requests (the rendered prompts,
                         sampling params and seeds recorded from the pipeline's run) submitted all at once,
                         with no dependencies between them: the upper bound a dependent pipeline can reach
                         on its own work (goal >= 0.9)
  ratio_vs_raw_vllm=     pipeline tok/s / ONE raw `generate` over the bare answer prompts (a batch of the
                         same size; no few-shot turns, no growing conversation): kept for continuity
  ratio_vs_hf_pipeline=  vLLM pipeline tok/s / the same pipeline on the hf engine; the hf pipeline runs in a
                         subprocess (vLLM allows one engine per process) on the first --hf-prompts prompts
Each side prints its prompt and generated token counts and vLLM's prefix-cache hit rate (cached prompt
tokens / prompt tokens); the pipeline also prints how many requests it kept in flight (peak, time-weighted
mean, and the wall time spent under half the peak: the dependency tail the replay does not have).
The prefix cache is reset before each side. No request cache is used.
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
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
PROMPTS = str(REPO / "data" / "red_team.jsonl")


class Recorder:
    """Passes every call through to an engine and records each generation request (ids, params), and how
    many requests were in flight during each engine step (`timeline`: (seconds the step took, in flight))."""

    def __init__(self, inner):
        self.inner, self.requests = inner, []
        self.name, self.model_id, self.model_hash = inner.name, inner.model_id, inner.model_hash
        self.tokenizer, self.max_model_len = inner.tokenizer, inner.max_model_len
        self.reports_stop = getattr(inner, "reports_stop", False)
        self.in_flight, self.timeline, self._t = 0, [], None

    def submit(self, rid, prompt, params):
        ids = self.inner.encode(prompt)
        self.requests.append((ids, params))
        self.inner.submit(rid, ids, params)
        self.in_flight += 1

    def poll(self):
        t0 = time.perf_counter() if self._t is None else self._t
        out = self.inner.poll()
        self._t = time.perf_counter()
        self.timeline.append((self._t - t0, self.in_flight))
        self.in_flight -= len(out)
        return out

    def __getattr__(self, name):
        return getattr(self.inner, name)


def occupancy(timeline: list) -> dict:
    """Where a dependent pipeline loses to the replay: wall time spent with under half of the peak number
    of requests in flight (conversations waiting on their own previous step, at the end of the run)."""
    total = sum(dt for dt, _ in timeline) or 1e-9
    peak = max((n for _, n in timeline), default=0)
    low = sum(dt for dt, n in timeline if n < peak / 2)
    return {"peak_in_flight": peak, "mean_in_flight": round(sum(dt * n for dt, n in timeline) / total, 1),
            "seconds_under_half_peak": round(low, 1), "fraction_under_half_peak": round(low / total, 3)}


def _counters(engine) -> tuple[int, int]:
    return getattr(engine, "prompt_tokens", 0), getattr(engine, "cached_prompt_tokens", 0)


def _side(eng, tokens: int, seconds: float, before: tuple[int, int], **extra) -> dict:
    p, c = (a - b for a, b in zip(_counters(eng), before))
    return {**extra, "prompt_tokens": p, "generated_tokens": tokens, "seconds": round(seconds, 2),
            "tok_s": round(tokens / seconds, 1), "prefix_cache_hit_rate": round(c / max(p, 1), 3)}


def pipeline(engine_name: str, model: str, n: int, config, engine=None, max_model_len: int = 4096
             ) -> tuple[dict, list]:
    """One SL-CAI run with no request cache; returns its figures and the engine requests it made."""
    from cai.critique import critique
    from cai.engine import make_engine
    from cai.engine.cached import CachedEngine

    rec = Recorder(engine or make_engine(engine_name, model, max_model_len=max_model_len))
    if hasattr(rec.inner, "reset_prefix_cache"):
        rec.inner.reset_prefix_cache()
    before = _counters(rec.inner)
    with tempfile.TemporaryDirectory() as out:
        m = critique(prompts=PROMPTS, limit=n, out=out, engine=CachedEngine(rec, None), progress=False,
                     config=config)
    side = _side(rec.inner, m["generated_tokens"], m["seconds"], before, engine=engine_name, prompts=n,
                 requests=len(rec.requests), kept=m["kept"], **occupancy(rec.timeline))
    return side, rec.requests


def replay(engine, requests: list) -> dict:
    """The pipeline's own requests in one batch: every one enters the engine at once."""
    engine.reset_prefix_cache()
    before = _counters(engine)
    t0 = time.perf_counter()
    res = engine.generate([ids for ids, _ in requests], [p for _, p in requests])
    seconds = time.perf_counter() - t0
    tokens = sum(len(r.outputs[0].token_ids) for r in res if r.ok)
    return _side(engine, tokens, seconds, before, requests=len(requests))


def raw_generate(engine, n: int, max_tokens: int) -> dict:
    """One `generate` over n bare answer prompts: same prompts, params and per-request seeds as the answer step."""
    from cai.data.sources import as_messages, load_prompts
    from cai.engine import SamplingParams
    from cai.stage import request_seed

    rows = load_prompts(PROMPTS, limit=n)
    prompts = [engine.format_chat(as_messages(r["prompt"])) for r in rows]
    params = [SamplingParams(temperature=0.7, max_tokens=max_tokens, seed=request_seed(0, f"{r['id']}:answer:0"))
              for r in rows]
    engine.reset_prefix_cache()
    before = _counters(engine)
    t0 = time.perf_counter()
    res = engine.generate(prompts, params)
    seconds = time.perf_counter() - t0
    return _side(engine, sum(len(r.outputs[0].token_ids) for r in res if r.ok), seconds, before, prompts=n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=None, help="default: CritiqueConfig's")
    ap.add_argument("--max-tokens", type=int, default=None, help="every step's budget (default: CritiqueConfig's)")
    ap.add_argument("--max-model-len", type=int, default=4096)
    ap.add_argument("--hf-prompts", type=int, default=16, help="prompts for the (slow) hf pipeline; 0 skips it")
    ap.add_argument("--hf-only", action="store_true", help=argparse.SUPPRESS)  # the subprocess half
    a = ap.parse_args()

    from cai.critique import CritiqueConfig
    kw = {} if a.rounds is None else {"rounds": a.rounds}
    if a.max_tokens:
        base = CritiqueConfig()
        kw.update({s: getattr(base, s).replace(max_tokens=a.max_tokens) for s in ("answer", "critique", "revision")})
    config = CritiqueConfig(**kw)
    if a.hf_only:
        print("HF_RESULT=" + json.dumps(pipeline("hf", a.model, a.hf_prompts, config,
                                                 max_model_len=a.max_model_len)[0]))
        return

    from cai.engine import make_engine
    # as `cai critique` opens it: a text-only job (bf16 on a CPU that has it)
    engine = make_engine("vllm", a.model, max_model_len=a.max_model_len, text_only=True)
    print(f"# vllm dtype {engine.dtype}, {'compiled' if engine.compiled else 'eager'}", flush=True)
    raw_generate(engine, 4, 8)  # warm-up: first-call allocation stays out of the timings
    pipe, requests = pipeline("vllm", a.model, a.prompts, config, engine=engine)
    print(f"vllm_pipeline: {pipe}", flush=True)
    rep = replay(engine, requests)
    print(f"replay: {rep}", flush=True)
    raw = raw_generate(engine, a.prompts, config.answer.max_tokens)
    print(f"raw_vllm: {raw}", flush=True)
    print(f"ratio_vs_replay={pipe['tok_s'] / rep['tok_s']:.3f}")
    print(f"ratio_vs_raw_vllm={pipe['tok_s'] / raw['tok_s']:.3f}", flush=True)
    if a.hf_prompts:
        engine.close()
        args = [sys.executable, __file__, "--hf-only", "--model", a.model, "--hf-prompts", str(a.hf_prompts),
                "--max-model-len", str(a.max_model_len)]
        args += ["--rounds", str(a.rounds)] if a.rounds else []
        args += ["--max-tokens", str(a.max_tokens)] if a.max_tokens else []
        r = subprocess.run(args, capture_output=True, text=True, env={**os.environ}, check=False)
        line = next((x for x in r.stdout.splitlines() if x.startswith("HF_RESULT=")), None)
        if line is None:
            sys.exit(f"hf pipeline failed:\n{r.stderr[-3000:]}")
        hf = json.loads(line.removeprefix("HF_RESULT="))
        print(f"hf_pipeline: {hf}")
        print(f"ratio_vs_hf_pipeline={pipe['tok_s'] / hf['tok_s']:.3f}")


if __name__ == "__main__":
    main()
