"""`cai label` and `cai rlaif`: AI preference labels for pairs of responses.

Pairs are read (a `cai sample` dataset or any table with prompt, response_a, response_b), judged in
batches of `batch_pairs` (each batch one engine call, each finished pair appended to the run's record
log), and written as the `prefs` config: TRL conversational columns `prompt`, `chosen`, `rejected`,
plus the soft label and its evidence.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from cai.config import core
from cai.constitution import load_constitution
from cai.data.layout import write_dataset
from cai.data.sources import as_messages, load_prompts, read_rows
from cai.data.store import RecordLog, RunDir, content_digest, pause_point, tie_worker_to_parent
from cai.engine.base import Engine
from cai.engine.config import EngineConfig, engine_config
from cai.errors import InputError
from cai.feedback.config import LabelConfig, LabelStage, RlaifStage, SampleConfig
from cai.feedback.judge import Comparison, Judge
from cai.feedback.sample import raise_partial, sample_core, sample_tables
from cai.feedback.soft_labels import Preference
from cai.stage import Progress, as_engine, check_out, open_engine, print_summary, provenance

PAIR_COLUMNS = ("prompt", "response_a", "response_b")

CARD = """Preference pairs labelled by the AI judge `{judge}` under constitution `{constitution}` ({mode} mode).

Columns:
- `prompt`, `chosen`, `rejected`: TRL conversational format (lists of `{{role, content}}` messages).
- `p_chosen`: soft label, the judge's probability that `chosen` is better than `rejected` (>= 0.5 by
  construction: the hard label follows the soft one). Train with target p_chosen, e.g. cross-entropy
  on the Bradley-Terry probability, or cDPO with label smoothing 1 - p_chosen.
- `p_ab`: p(first option better) with response_a shown as (A); `p_ba`: the same with response_b shown
  as (A). p(response_a better) = (p_ab + 1 - p_ba) / 2. `order_consistent`: both orders agree.
- `principle_ids`: the comparison principle(s) sampled for this pair (p averaged over them).
- `rationale`, `rationale_ba`: chain-of-thought of each order (CoT mode; empty otherwise). In CoT mode
  each order's p is clamped to {clamp}.
- `mass_outside`: probability the judge put on tokens other than the two option letters.
- `truncated`: the responses were cut to fit the judge's context; `chosen`/`rejected` still hold the full
  responses, and `judged_chosen`/`judged_rejected` the cut texts the judge read (null when not cut).
- `order_consistent` and the manifest's `position_consistency` are null when only one order was scored.
"""


def read_pairs(data: str, config: str | None = "pairs") -> list[dict[str, Any]]:
    """Rows {id, prompt, response_a, response_b, ...}; a missing column is an InputError naming the row."""
    from pathlib import Path

    p = Path(data)
    rows = read_rows(p, config=config if p.is_dir() and (p / (config or "")).is_dir() else None)
    if not rows:
        raise InputError("no pairs: the data is empty", file=data)
    out, seen = [], set()
    for i, (line, row) in enumerate(rows):
        for col in PAIR_COLUMNS:
            if col not in row:
                raise InputError(f"missing column {col!r} (columns: {', '.join(sorted(row)) or 'none'})",
                                 file=data, line=line, field=col)
        check_prompt(row["prompt"], data, line)
        rid = str(row.get("id", i))
        if rid in seen:  # records are keyed by id: a duplicate would get another pair's label
            raise InputError(f"duplicate pair id {rid!r}", file=data, line=line, field="id")
        seen.add(rid)
        out.append({**row, "id": rid, "line": line})
    return out


def check_prompt(prompt: Any, data, line) -> None:
    """A pair's prompt is a non-empty string or a non-empty list of {role, content} string messages."""
    if isinstance(prompt, str):
        return
    if isinstance(prompt, list) and prompt:
        for j, m in enumerate(prompt):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise InputError(f"message {j} must be an object with string `role` and `content`, got "
                                 f"{json.dumps(m, default=str)[:80]}", file=data, line=line, field="prompt")
        return
    raise InputError("prompt must be a string or a non-empty list of {role, content} messages", file=data,
                     line=line, field="prompt")


def skip_reason(row: dict[str, Any]) -> str | None:
    """Why a pair cannot be judged (recorded, never raised): an empty or identical response."""
    a, b = row["response_a"], row["response_b"]
    if not isinstance(a, str) or not isinstance(b, str) or not a.strip() or not b.strip():
        return "empty_response"
    if a.strip() == b.strip():
        return "identical_responses"
    return None


def label_core(judge: Judge, run, pairs: list[dict[str, Any]], log_name: str = "prefs"
               ) -> dict[str, dict[str, Any]]:
    """Judge every pair not yet in the run's record log, `batch_pairs` at a time; return all records.
    Records with an engine error are retried on the next run (errors are never cached)."""

    log = run.log(log_name)
    done = {k: v for k, v in log.load().items() if not v.get("error")}
    todo = [r for r in pairs if r["id"] not in done]
    bar = Progress(len(todo), "label", judge.engine, unit="pair")
    bs = judge.cfg.batch_pairs
    for lo in range(0, len(todo), bs):
        batch, cmps = todo[lo:lo + bs], []
        for r in batch:
            reason = skip_reason(r)
            if reason:
                rec = {"key": r["id"], "skip": reason, "error": None}
                log.append(rec)
                done[r["id"]] = rec
                bar.skip()  # judged without the engine
                continue
            cmps.append(Comparison(key=r["id"], prompt=r["prompt"], r1=r["response_a"], r2=r["response_b"]))
        for cmp in judge.judge(cmps):
            rec = {"key": cmp.key, "skip": None, "error": cmp.error, "p_ab": cmp.p_ab, "p_ba": cmp.p_ba,
                   "principle_ids": [p.id for p in cmp.principles], "mass_outside": cmp.mass_outside,
                   "floored": cmp.floored, "truncated": cmp.truncated, "rationale": cmp.rationale,
                   "rationale_ba": cmp.rationale_ba, "response_a": cmp.r1, "response_b": cmp.r2}
            if cmp.error and cmp.error.startswith("too_long"):
                rec["skip"], rec["error"] = "too_long", None
            log.append(rec)
            done[cmp.key] = rec
            bar.update()
    bar.close()
    log.close()
    return done


def prefs_table(pairs, done, prov: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The `prefs` rows and the label statistics for the manifest."""

    rows, skips, errors, per_principle, truncated = [], Counter(), [], Counter(), 0
    margins, consistent, outside, floored = [], [], [], 0
    for r in pairs:
        rec = done[r["id"]]
        if rec.get("skip"):
            skips[rec["skip"]] += 1
            continue
        if rec.get("error"):
            errors.append({"id": r["id"], "error": rec["error"]})
            continue
        one_order = rec["p_ba"] is None
        pref = Preference(rec["p_ab"], 1.0 - rec["p_ab"] if one_order else rec["p_ba"])
        first = pref.first_chosen
        # Train on the full responses; the judge may have read them cut to its context ("... [...]"),
        # and that text is kept apart, so no trainer ever learns the marker.
        chosen, rejected = (r["response_a"], r["response_b"]) if first else (r["response_b"], r["response_a"])
        ja, jb = rec["response_a"], rec["response_b"]
        judged = ((ja, jb) if first else (jb, ja)) if rec["truncated"] else (None, None)
        per_principle.update(rec["principle_ids"])
        truncated += bool(rec["truncated"])
        floored += bool(rec["floored"])
        margins.append(abs(pref.p1 - 0.5))
        order_consistent = None if one_order else pref.order_consistent  # one order: nothing to agree on
        if not one_order:
            consistent.append(order_consistent)
        outside.append(rec["mass_outside"])
        rows.append({"id": r["id"], "prompt_id": r.get("prompt_id", r["id"]),
                     "prompt": as_messages(r["prompt"]),
                     "chosen": [{"role": "assistant", "content": chosen}],
                     "rejected": [{"role": "assistant", "content": rejected}],
                     "p_chosen": pref.p_chosen, "p_ab": rec["p_ab"], "p_ba": rec["p_ba"],
                     "order_consistent": order_consistent, "chosen_is_a": first,
                     "principle_ids": rec["principle_ids"], "rationale": rec["rationale"],
                     "rationale_ba": rec["rationale_ba"], "mass_outside": rec["mass_outside"],
                     "truncated": rec["truncated"], "judged_chosen": judged[0], "judged_rejected": judged[1],
                     **prov})
    n = len(rows)
    stats = {"pairs": len(pairs), "labelled": n, "errors": len(errors), "skipped": dict(skips),
             "truncated": truncated, "floored_option_mass": floored,
             "mean_abs_p_minus_half": round(sum(margins) / n, 6) if n else None,
             "position_consistency": round(sum(consistent) / len(consistent), 6) if consistent else None,
             "mass_outside_options": round(sum(outside) / n, 6) if n else None,
             "per_principle": dict(sorted(per_principle.items())), "error_rows": errors[:50]}
    return rows, stats


def label(*, data: str, out: str, constitution: str, config: LabelConfig | None = None, overwrite: bool = False,
          engine: Engine | EngineConfig) -> dict[str, Any]:
    """Python API of `cai label`; returns the manifest."""

    cfg = config or LabelConfig()
    c = load_constitution(constitution)
    pairs = read_pairs(data)
    run = RunDir(out, inputs=[data], overwrite=overwrite)  # checked before the engine loads
    try:
        engine = as_engine(engine, seed=cfg.seed, out=out, inputs=[data])
        judge = Judge(engine, c, cfg)
        # keyed by content: an edited pair is a new run, never another pair's label
        run.start({"stage": "label", "data": content_digest([[r["id"], r["prompt"], r["response_a"],
                                                               r["response_b"]] for r in pairs]),
                   "n_pairs": len(pairs), "constitution": c.hash, "judge_hash": engine.model_hash,
                   "config": cfg.to_dict()})
        return _label(judge, run, pairs, out, c, cfg)
    finally:
        run.release()


def _label(judge, run, pairs, out, c, cfg) -> dict[str, Any]:

    engine = judge.engine
    t0 = time.perf_counter()
    done = label_core(judge, run, pairs)
    prov = provenance(engine, seed=cfg.seed, sampling=cfg.to_dict(), constitution=c.name,
                      constitution_hash=c.hash, role="judge")
    rows, stats = prefs_table(pairs, done, prov)
    manifest = _manifest("label", stats, prov, engine, t0)
    write_dataset(out, {"prefs": rows}, manifest, title="cai label: AI preference labels",
                  body=CARD.format(judge=engine.model_id, constitution=c.name, mode=cfg.mode, clamp=cfg.clamp))
    _summary("label", stats, out, manifest)
    raise_partial(stats["errors"], len(pairs), out)
    return manifest


def rlaif(*, prompts: str, out: str, constitution: str, sample_config: SampleConfig,
          label_config: LabelConfig | None = None, column: str = "prompt", limit: int | None = None,
          overwrite: bool = False, policy: Engine | EngineConfig, judge: Engine | EngineConfig | None = None
          ) -> dict[str, Any]:
    """Python API of `cai rlaif`: sample from the policy, pair, and label, into one dataset
    (configs `samples`, `pairs`, `prefs`). When policy and judge are the same model, one engine serves
    both. Otherwise the policy engine is closed and the judge opens; on vLLM, which allows one engine per
    process and does not give its memory back, the judge runs in a child process that appends to the same
    record log. `judge` defaults to the policy."""

    lcfg = label_config or LabelConfig()
    c = load_constitution(constitution)
    rows = load_prompts(prompts, column=column, limit=limit)
    run = RunDir(out, inputs=[prompts], overwrite=overwrite)
    try:
        judge = policy if judge is None else judge
        same = judge is policy or (isinstance(judge, EngineConfig) and isinstance(policy, EngineConfig) and
                                   judge.model == policy.model and judge.backend == policy.backend)
        # the policy only samples text, unless it also judges (option log-probs)
        policy = as_engine(policy, seed=sample_config.seed, out=out, inputs=[prompts], text_only=not same)
        run.start({"stage": "rlaif", "prompts": content_digest([[r["id"], r["prompt"]] for r in rows]),
                   "column": column, "n_prompts": len(rows), "policy_hash": policy.model_hash,
                   "sample": sample_config.to_dict(), "constitution": c.hash,
                   "judge": judge.model if isinstance(judge, EngineConfig) else judge.model_hash,
                   "label": lcfg.to_dict()})
        return _rlaif(run, rows, out, c, constitution, sample_config, lcfg, policy, judge, same)
    finally:
        run.release()


def _rlaif(run, rows, out, c, constitution, sample_config, lcfg, policy, judge, same: bool):
    """`judge` is an Engine or, when it still has to be opened, its EngineConfig; `same`: one engine serves both."""
    t0 = time.perf_counter()
    done = sample_core(policy, run, rows, sample_config)
    sprov = provenance(policy, seed=sample_config.seed, sampling=sample_config.to_dict(), role="policy")
    samples, pairs, sstats = sample_tables(rows, done, sample_config, sprov)
    if isinstance(judge, EngineConfig) and not same and policy.name == "vllm":
        policy.close()
        ldone, lprov, counters = judge_in_subprocess(judge, constitution, lcfg, run, pairs)
        judge_engine = _Counters(**counters)
    else:
        if same:
            judge_engine = policy
        elif isinstance(judge, EngineConfig):
            policy.close()
            judge_engine = as_engine(judge, seed=lcfg.seed)
        else:
            judge_engine = judge
        judge = Judge(judge_engine, c, lcfg)
        ldone = label_core(judge, run, pairs)
        lprov = provenance(judge_engine, seed=lcfg.seed, sampling=lcfg.to_dict(), constitution=c.name,
                           constitution_hash=c.hash, role="judge")
    prefs, lstats = prefs_table(pairs, ldone, lprov)
    manifest = _manifest("rlaif", {**lstats, "sampling": sstats}, {"policy": sprov, "judge": lprov},
                         judge_engine, t0)
    write_dataset(out, {"samples": samples, "pairs": pairs, "prefs": prefs}, manifest,
                  title="cai rlaif: policy samples with AI preference labels",
                  body=CARD.format(judge=lprov["model_id"], constitution=c.name, mode=lcfg.mode,
                                   clamp=lcfg.clamp))
    _summary("rlaif", lstats, out, manifest)
    raise_partial(sstats["errors"] + lstats["errors"], len(rows) + len(pairs), out)
    return manifest


class _Counters:
    """The engine counters a child-process judge reported, for the manifest."""

    def __init__(self, engine_requests: int, cache_hits: int, generated_tokens: int):
        self.engine_requests, self.cache_hits, self.generated_tokens = engine_requests, cache_hits, generated_tokens


def judge_in_subprocess(judge: EngineConfig, constitution, lcfg: LabelConfig, run, pairs: list[dict[str, Any]]):
    """Label `pairs` with a judge engine opened in a fresh (spawned) process, appending to `run`'s `prefs`
    record log; returns (records, judge provenance, engine counters). A failure in the child is raised here.
    The child dies with this process (even by kill -9) and holds the run's worker lock while it lives, so a
    rerun never starts a second judge beside an orphan (`cai.data.store.tie_worker_to_parent`)."""
    ctx = mp.get_context("spawn")
    with ctx.Pool(1, initializer=tie_worker_to_parent, initargs=(os.getpid(), str(run.state))) as pool:
        lprov, counters = pool.apply(_judge_worker, (judge, str(constitution)
                                                     if not hasattr(constitution, "hash") else constitution,
                                                     lcfg, str(run.state), pairs))
    done = {k: v for k, v in RecordLog(run.state / "records" / "prefs").load().items()}
    return done, lprov, counters


def _judge_worker(judge: EngineConfig, constitution, lcfg: LabelConfig, state: str, pairs):

    class _Run:  # the parent holds the run directory's lock; the child only appends to its record log
        def log(self, name):
            return RecordLog(Path(state) / "records" / name)

    pause_point("judge-worker")  # kill -9 tests: tied to its parent, holding the worker lock, not yet judging
    c = load_constitution(constitution) if isinstance(constitution, str) else constitution
    engine = open_engine(judge, seed=lcfg.seed)
    label_core(Judge(engine, c, lcfg), _Run(), pairs)
    prov = provenance(engine, seed=lcfg.seed, sampling=lcfg.to_dict(), constitution=c.name,
                      constitution_hash=c.hash, role="judge")
    counters = {"engine_requests": engine.engine_requests, "cache_hits": engine.cache_hits,
                "generated_tokens": engine.generated_tokens}
    engine.close()
    return prov, counters


def _manifest(stage, stats, prov, engine, t0) -> dict[str, Any]:
    return {"stage": stage, **stats, "provenance": prov, "seconds": round(time.perf_counter() - t0, 2),
            "engine_requests": engine.engine_requests, "cache_hits": engine.cache_hits,
            "generated_tokens": engine.generated_tokens}


def _summary(stage, stats, out, manifest) -> None:
    print_summary(stage, [("pairs", stats["pairs"]), ("labelled", stats["labelled"]), ("errors", stats["errors"]),
                          ("skipped", sum(stats["skipped"].values())), ("truncated", stats["truncated"]),
                          ("position consistency", stats["position_consistency"]),
                          ("mean |p-0.5|", stats["mean_abs_p_minus_half"]),
                          ("mass outside options", stats["mass_outside_options"]),
                          ("seconds", manifest["seconds"]), ("out", out)])


def run_label(cfg: LabelStage, *, overwrite: bool = False) -> dict[str, Any]:
    """Run `label` from its stage config (`cai label`, the pipeline's `label` kind)."""
    check_out(cfg.out)
    return label(data=cfg.data, out=cfg.out, constitution=cfg.constitution, config=core(LabelConfig, cfg),
                 overwrite=overwrite, engine=engine_config(cfg.judge, cfg.engine))


def run_rlaif(cfg: RlaifStage, *, overwrite: bool = False) -> dict[str, Any]:
    """Run `rlaif` from its stage config (`cai rlaif`, the pipeline's `rlaif` kind). No `judge` means the
    policy judges itself, on the policy's engine."""
    check_out(cfg.out)
    policy = engine_config(cfg.model, cfg.engine)
    judge = engine_config(cfg.judge or cfg.model, cfg.judge_engine if cfg.judge else cfg.engine)
    return rlaif(prompts=cfg.prompts, out=cfg.out, constitution=cfg.constitution, sample_config=cfg.sample,
                 label_config=cfg.label, column=cfg.column, limit=cfg.limit or None, overwrite=overwrite,
                 policy=policy, judge=judge)
