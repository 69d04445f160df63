"""`cai generate`: answer a prompt set with a model and write the `responses` config.

The smallest complete stage: prompts in, one batch through the engine (cached, resumable), a dataset
in the shared layout out. The critique and feedback stages follow the same shape.
"""
from __future__ import annotations

import argparse
import time
from typing import Any

from cai.data.layout import write_dataset
from cai.data.sources import DEFAULT_PROMPTS, as_messages, load_prompts
from cai.data.store import RunDir, content_digest
from cai.engine import SamplingParams
from cai.engine.base import Engine
from cai.engine.config import EngineConfig
from cai.errors import InputError, PartialRunError
from cai.stage import (
    add_engine_args,
    answer_prompts,
    as_engine,
    engine_config_from_args,
    print_summary,
    provenance,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="answer prompts with a model; writes the `responses` config")
    p.add_argument("--prompts", default=DEFAULT_PROMPTS, help="JSONL/CSV/Parquet file, dataset dir or hub id")
    p.add_argument("--column", default="prompt", help="prompt column (default: prompt)")
    p.add_argument("--out", required=True, help="output dataset directory")
    p.add_argument("--system", default=None, help="system prompt")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--n", type=int, default=1, help="completions per prompt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="use only the first N prompts")
    p.add_argument("--overwrite", action="store_true", help="replace an output dir from another configuration")
    add_engine_args(p)
    p.set_defaults(func=_cmd)


def check_sampling_flags(args) -> None:
    """Sampling flags are user input: a bad value is a one-line error naming the flag (exit 2)."""
    checks = [("--n", getattr(args, "n", 1) >= 1, "must be >= 1"),
              ("--temperature", args.temperature >= 0, "must be >= 0"),
              ("--top-p", 0 < args.top_p <= 1, "must be in (0, 1]"),
              ("--max-tokens", args.max_tokens >= 1, "must be >= 1"),
              ("--limit", args.limit is None or args.limit >= 1, "must be >= 1")]
    for flag, ok, msg in checks:
        if not ok:
            raise InputError(f"{msg}, got {getattr(args, flag[2:].replace('-', '_'))}", field=flag)


def _cmd(args) -> int:
    check_sampling_flags(args)
    params = SamplingParams(temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens, n=args.n)
    generate(prompts=args.prompts, out=args.out, column=args.column, params=params, seed=args.seed,
             system=args.system, limit=args.limit, overwrite=args.overwrite,
             engine=engine_config_from_args(args))
    return 0


def generate(*, prompts: str, out: str, params, column: str = "prompt", seed: int = 0, system: str | None = None,
             limit: int | None = None, overwrite: bool = False, engine: Engine | EngineConfig) -> dict[str, Any]:

    rows = load_prompts(prompts, column=column, limit=limit)
    run = RunDir(out, inputs=[prompts], overwrite=overwrite)  # checked before the engine loads
    try:
        engine = as_engine(engine, seed=seed, out=out, inputs=[prompts])
        # keyed by content (ids and prompt texts), not by the file's path: an edited prompt is a new run
        run.start({"stage": "generate", "prompts": content_digest([[r["id"], r["prompt"]] for r in rows]),
                   "column": column, "n_prompts": len(rows), "model_hash": engine.model_hash,
                   "params": params.to_dict(), "seed": seed, "system": system})
        return _generate(engine, run, rows, prompts, out, params, seed, system)
    finally:
        run.release()


def _generate(engine, run, rows, prompts, out, params, seed, system) -> dict[str, Any]:

    t0 = time.perf_counter()
    done = answer_prompts(engine, run, rows, params, seed=seed, system=system, log_name="responses",
                          desc="generate")
    prov = provenance(engine, seed=seed, sampling=params.to_dict())
    table = []
    for r in rows:
        rec = done[r["id"]]
        for j, text in enumerate(rec["responses"] or [None]):
            table.append({"id": r["id"], "sample": j, "prompt": r["prompt"],
                          "messages": as_messages(r["prompt"], system) + ([{"role": "assistant", "content": text}]
                                                                          if text is not None else []),
                          "response": text, "finish_reason": rec["finish_reasons"][j] if text is not None else "error",
                          "completion_tokens": rec["tokens"][j] if text is not None else 0,
                          "error": rec["error"], **{k: r[k] for k in r if k not in ("id", "prompt")}, **prov})
    errors = sum(1 for r in table if r["error"])
    manifest = {"stage": "generate", "rows": len(table), "errors": errors, "provenance": prov,
                "seconds": round(time.perf_counter() - t0, 2), "generated_tokens": engine.generated_tokens,
                "engine_requests": engine.engine_requests, "cache_hits": engine.cache_hits}
    write_dataset(out, {"responses": table}, manifest, title="cai generate: responses",
                  body=f"Responses of `{engine.model_id}` to `{prompts}`.")
    print_summary("generate", [("rows", len(table)), ("errors", errors), ("tokens", engine.generated_tokens),
                               ("seconds", manifest["seconds"]), ("out", out)])
    if errors:
        raise PartialRunError(f"{errors} of {len(table)} requests failed; they are recorded in {out}")
    return manifest

