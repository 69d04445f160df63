"""`generate`: answer a prompt set with a model and write the `responses` config.

The smallest complete stage: prompts in, one batch through the engine (cached, resumable), a dataset
in the shared layout out. The critique and feedback stages follow the same shape. `run_generate` runs it
from its stage config (`cai generate`, pipelines).
"""
from __future__ import annotations

import time
from typing import Any

from cai.data.layout import write_dataset
from cai.data.sources import as_messages, load_prompts
from cai.data.store import RunDir, content_digest
from cai.engine.base import Engine
from cai.engine.config import EngineConfig, engine_config
from cai.errors import PartialRunError
from cai.generate.config import GenerateStage
from cai.stage import answer_prompts, as_engine, check_out, print_summary, provenance


def run_generate(cfg: GenerateStage, *, overwrite: bool = False) -> dict[str, Any]:
    """Run `generate` from its stage config (the pipeline's `generate` kind and `cai generate`)."""
    check_out(cfg.out)
    return generate(prompts=cfg.prompts, out=cfg.out, params=cfg.sampling, column=cfg.column, seed=cfg.seed,
                    system=cfg.system, limit=cfg.limit or None, overwrite=overwrite,
                    engine=engine_config(cfg.model, cfg.engine))


def generate(*, prompts: str, out: str, params, column: str = "prompt", seed: int = 0, system: str | None = None,
             limit: int | None = None, overwrite: bool = False, engine: Engine | EngineConfig) -> dict[str, Any]:

    rows = load_prompts(prompts, column=column, limit=limit)
    run = RunDir(out, inputs=[prompts], overwrite=overwrite)  # checked before the engine loads
    try:
        engine = as_engine(engine, seed=seed, out=out, inputs=[prompts],
                           work_tokens=len(rows) * params.n * params.max_tokens, text_only=not params.logprobs,
                           max_seqs=len(rows) * params.n)
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

