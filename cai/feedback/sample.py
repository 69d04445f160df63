"""`cai sample`: K responses per prompt from the policy (one request with n=K), paired for labelling.

Writes the configs `samples` (one row per response) and `pairs` (two distinct responses of a prompt).
Resume and caching are the shared machinery: a `RunDir`, a `RecordLog` of finished prompts, and the
request cache behind the engine.
"""
from __future__ import annotations

import itertools
import random
import time
from typing import Any

from cai.config import core
from cai.data.layout import write_dataset
from cai.data.sources import load_prompts
from cai.data.store import RunDir, content_digest
from cai.engine import SamplingParams
from cai.engine.base import Engine
from cai.engine.config import EngineConfig, engine_config
from cai.errors import PartialRunError
from cai.feedback.config import SampleConfig, SampleStage
from cai.stage import answer_prompts, as_engine, check_out, print_summary, provenance


def make_pairs(responses: list[str | None], pairing: str, pairs_per_prompt: int, rng_key: str
               ) -> list[tuple[int, int]]:
    """Index pairs (i, j), i < j, of distinct, non-empty responses. Identical texts (after stripping
    whitespace) are never paired: the first occurrence stands for all of them."""
    seen, keep = set(), []
    for i, r in enumerate(responses):
        t = (r or "").strip()
        if t and t not in seen:
            seen.add(t)
            keep.append(i)
    pairs = list(itertools.combinations(keep, 2))
    if pairing == "random":
        pairs = sorted(random.Random(rng_key).sample(pairs, min(pairs_per_prompt, len(pairs))))
    return pairs


def sample_core(engine, run, rows: list[dict[str, Any]], cfg: SampleConfig) -> dict[str, dict[str, Any]]:
    """Sample every prompt not yet in the run's `samples` log, in one continuous batch; return all records."""

    params = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens, n=cfg.n)
    return answer_prompts(engine, run, rows, params, seed=cfg.seed, system=cfg.system, log_name="samples",
                          desc="sample")


def sample_tables(rows, done, cfg: SampleConfig, prov: dict[str, Any]) -> tuple[list[dict], list[dict], dict]:
    """The `samples` and `pairs` tables, and their counts for the manifest."""
    samples, pairs = [], []
    stats = {"prompts": len(rows), "errors": 0, "empty_responses": 0, "duplicate_responses": 0}
    for r in rows:
        rec = done[r["id"]]
        if rec["error"]:
            stats["errors"] += 1
            samples.append({"id": f"{r['id']}:0", "prompt_id": r["id"], "sample": 0, "prompt": r["prompt"],
                            "response": None, "finish_reason": "error", "completion_tokens": 0,
                            "error": rec["error"], **prov})
            continue
        texts = rec["responses"]
        for j, text in enumerate(texts):
            samples.append({"id": f"{r['id']}:{j}", "prompt_id": r["id"], "sample": j, "prompt": r["prompt"],
                            "response": text, "finish_reason": rec["finish_reasons"][j],
                            "completion_tokens": rec["tokens"][j], "error": None, **prov})
        stripped = [t.strip() for t in texts]
        stats["empty_responses"] += sum(1 for t in stripped if not t)
        stats["duplicate_responses"] += sum(1 for t in stripped if t) - len({t for t in stripped if t})
        for i, j in make_pairs(texts, cfg.pairing, cfg.pairs_per_prompt, f"{cfg.seed}:{r['id']}"):
            pairs.append({"id": f"{r['id']}:{i}-{j}", "prompt_id": r["id"], "prompt": r["prompt"],
                          "response_a": texts[i], "response_b": texts[j], "sample_a": i, "sample_b": j})
    stats["samples"], stats["pairs"] = len(samples), len(pairs)
    return samples, pairs, stats


def sample(*, prompts: str, out: str, config: SampleConfig, column: str = "prompt", limit: int | None = None,
           overwrite: bool = False, engine: Engine | EngineConfig) -> dict[str, Any]:
    """Python API of `cai sample`; returns the manifest."""

    rows = load_prompts(prompts, column=column, limit=limit)
    run = RunDir(out, inputs=[prompts], overwrite=overwrite)  # checked before the engine loads
    try:
        engine = as_engine(engine, seed=config.seed, out=out, inputs=[prompts], text_only=True)
        run.start({"stage": "sample", "prompts": content_digest([[r["id"], r["prompt"]] for r in rows]),
                   "column": column, "n_prompts": len(rows), "model_hash": engine.model_hash,
                   "config": config.to_dict()})
        return _sample(engine, run, rows, prompts, out, config)
    finally:
        run.release()


def _sample(engine, run, rows, prompts, out, config: SampleConfig) -> dict[str, Any]:

    t0 = time.perf_counter()
    done = sample_core(engine, run, rows, config)
    prov = provenance(engine, seed=config.seed, sampling=config.to_dict())
    samples, pairs, stats = sample_tables(rows, done, config, prov)
    manifest = {"stage": "sample", **stats, "provenance": prov, "seconds": round(time.perf_counter() - t0, 2),
                "generated_tokens": engine.generated_tokens, "engine_requests": engine.engine_requests,
                "cache_hits": engine.cache_hits}
    write_dataset(out, {"samples": samples, "pairs": pairs}, manifest, title="cai sample: policy samples and pairs",
                  body=f"{config.n} samples per prompt from `{engine.model_id}` on `{prompts}`, paired "
                       f"({config.pairing}); identical responses are never paired.")
    print_summary("sample", [("prompts", len(rows)), ("samples", len(samples)), ("pairs", len(pairs)),
                             ("errors", stats["errors"]), ("out", out)])
    raise_partial(stats["errors"], len(rows), out)
    return manifest


def raise_partial(errors: int, total: int, out) -> None:
    if errors:
        raise PartialRunError(f"{errors} of {total} requests failed; they are recorded in {out}")


def run_sample(cfg: SampleStage, *, overwrite: bool = False) -> dict[str, Any]:
    """Run `sample` from its stage config (`cai sample`, the pipeline's `sample` kind)."""
    check_out(cfg.out)
    return sample(prompts=cfg.prompts, out=cfg.out, config=core(SampleConfig, cfg), column=cfg.column,
                  limit=cfg.limit or None, overwrite=overwrite, engine=engine_config(cfg.model, cfg.engine))
