"""The SL-CAI driver: keep the engine full of conversation steps, log each finished conversation durably,
then write the `sft`, `prefs` and `trace` configs.

    1. load the constitution, prompts and engine (behind the request cache)
    2. open the run directory; finished conversations from an interrupted run are kept
    3. continuous feed (`Feed`): when a step finishes, that conversation's next step enters the engine at
       once; near the end, retried revisions send their later attempts ahead
    4. filter final revisions, build the tables, write the dataset and the manifest

`plan` walks the same state machines against the cache alone (`cai critique --dry-run`).
"""
from __future__ import annotations

import hashlib
import heapq
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from cai.constitution import PrincipleSampler, load_constitution
from cai.critique.config import SCAFFOLD_STOPS, CritiqueConfig
from cai.critique.conversation import Conversation, final_round, new_conversation, rows_of, step_name
from cai.data.layout import write_dataset
from cai.data.sources import load_prompts
from cai.data.store import RecordLog, RequestCache, RunDir, default_cache_path, fingerprint
from cai.engine import default_engine
from cai.engine.base import Engine
from cai.engine.cached import CachedEngine
from cai.engine.config import EngineConfig
from cai.errors import InputError, PartialRunError
from cai.models import model_hash, resolve_model
from cai.prompts import few_shot_critique_messages
from cai.stage import Progress, as_engine, print_summary, provenance


def critique(*, prompts: str | Path | list[dict], out: str | Path, constitution: Any = "harmless",
             config: CritiqueConfig | None = None, column: str = "prompt", limit: int | None = None,
             overwrite: bool = False, engine: Engine | EngineConfig, cache: str | Path | None = None,
             progress: bool = True) -> dict[str, Any]:
    """Run SL-CAI critique -> revision over `prompts` and write DIR/{sft,prefs,trace}. Returns the manifest.

    `engine` is any `Engine` (wrapped in a `CachedEngine` over `cache` unless it is one already), or the
    `EngineConfig` of one to open. Raises `PartialRunError` (exit 3) when some
    conversations failed: they are recorded in `trace` and left out of `sft` and `prefs`.
    """

    # 1. inputs
    cfg = config or CritiqueConfig()
    c, rows, sampler = _inputs(constitution, prompts, column, limit, cfg)
    engine = _open(engine, cache, cfg.seed, out=out, prompts=prompts, work_tokens=len(rows) * cfg.token_budget())

    # 2. run directory: a crash loses at most the conversations in flight
    run = RunDir(out, run_config(c, rows, engine, cfg), overwrite=overwrite)
    log = run.log("conversations")
    records = log.load()
    # failures are retried on a rerun; a conversation that overflowed the context would overflow again
    todo = [r for r in rows if r["id"] not in records or records[r["id"]]["error"]]

    # 3. continuous feed; the bar counts engine steps (answers, critiques, revisions), so its ETA is honest
    t0 = time.perf_counter()
    n_steps = 1 + 2 * cfg.rounds
    bar = _steps_bar(len(todo) * n_steps, engine) if progress else None
    feed = Feed(engine, c, cfg, ahead_below=len(todo) // 2 if cfg.send_ahead else 0)
    stops, examples = early_stops(cfg, engine), few_shot_texts(c)
    for r in todo:
        feed.send(new_conversation(r, sampler, cfg.rounds, stops, examples))
    while engine.has_unfinished():
        for rid, res in engine.poll():
            conv, takes = feed.take(rid, res)
            for taken in takes:
                if bar:
                    bar.bar.total += 0 if taken else 1  # a revision sampled again: one more step
                    if conv.done:  # stopped early (error, too long): its remaining steps never run
                        bar.bar.total -= n_steps - len(conv.steps) - (len(conv.steps) < n_steps)
                    bar.update(request_id=rid)
            if not takes or not takes[-1]:  # (`advance` says False only for a retry, never when done)
                continue  # its next attempt is already in the engine
            if not conv.done:
                feed.send(conv)
                continue
            records[conv.id] = rec = conv.record()
            log.append(rec)
        feed.top_up()
    log.close()
    if bar:
        bar.close()

    # 4. tables, filters, manifest
    inner = getattr(engine, "inner", engine)
    dtype = getattr(inner, "dtype", None)
    compiled = getattr(inner, "compiled", None)  # vLLM: chosen per job size on CPU
    mode = "" if compiled is None else ", compiled" if compiled else ", eager"
    prov = provenance(engine, seed=cfg.seed, sampling=cfg.sampling(), constitution=c.name,
                      constitution_version=c.version, constitution_hash=c.hash, rounds=cfg.rounds)
    tables: dict[str, list[dict[str, Any]]] = {"sft": [], "prefs": [], "trace": []}
    filtered, status_n, wasted = Counter({f: 0 for f in cfg.filters}), Counter(), 0
    for r in rows:
        rec = records[r["id"]]
        steps = rec["steps"]
        final, reason = (None, None) if rec["error"] or rec.get("too_long") else final_round(cfg.filters, steps, examples)
        status = "error" if rec["error"] else "too_long" if rec.get("too_long") else "filtered" if reason else "kept"
        status_n[status] += 1
        if reason:
            filtered[reason] += 1
        discarded = sum(s.get("discarded_tokens", 0) for s in rec["steps"])
        dropped = rec["steps"][2 * final + 1:] if status == "kept" else rec["steps"]  # kept: rounds after the result
        wasted += discarded + sum(s["tokens"] for s in dropped)
        for name, part in rows_of(rec, r, cfg, prov, status, reason, final).items():
            tables[name] += part
    seconds = time.perf_counter() - t0
    kept, errors = len(tables["sft"]), status_n["error"]
    # attempts sent ahead and not needed (`Feed`) were generated too: spent, and wasted
    spent = feed.ahead_tokens + sum(s["tokens"] + s.get("discarded_tokens", 0) for rec in records.values()
                                    for s in rec["steps"])
    wasted += feed.ahead_tokens
    manifest = {"stage": "critique", "conversations": len(rows), "kept": kept, "filtered": dict(filtered),
                "too_long": status_n["too_long"], "errors": errors, "rounds": cfg.rounds, "config": cfg.to_dict(),
                "provenance": {**prov, "dtype": dtype},
                "principle_counts": dict(Counter(p for rec in records.values() for p in rec["principle_ids"])),
                "seconds": round(seconds, 2), "generated_tokens": engine.generated_tokens,
                "tokens_per_s": round(engine.generated_tokens / max(seconds, 1e-9), 1),
                "tokens": spent, "wasted_tokens": wasted, "wasted_fraction": round(wasted / max(spent, 1), 3),
                "ahead_tokens": feed.ahead_tokens,
                "retried_revisions": sum(s.get("attempts", 1) - 1 for rec in records.values() for s in rec["steps"]
                                         if s["step"] == "revision"),
                "engine_requests": engine.engine_requests, "cache_hits": engine.cache_hits}
    write_dataset(out, tables, manifest, title=f"cai critique: SL-CAI with constitution `{c.name}`",
                  body=f"Critique and revision ({cfg.rounds} round(s)) of `{engine.model_id}`'s answers. Configs: "
                       "`sft` (prompt + final revision), `prefs` (chosen = final revision, rejected = initial "
                       "answer) and `trace` (every round, kept, filtered or failed).")
    if progress:
        print_summary("critique", [("conversations", len(rows)), ("kept", kept),
                                   *[(f"filtered: {f}", n) for f, n in filtered.items()],
                                   ("too long", status_n["too_long"]), ("errors", errors),
                                   ("tokens", engine.generated_tokens), ("wasted tokens", wasted),
                                   ("tok/s", manifest["tokens_per_s"]), ("seconds", manifest["seconds"]),
                                   ("engine requests", engine.engine_requests), ("cache hits", engine.cache_hits),
                                   ("model", f"{engine.model_id} ({engine.name}, {dtype or 'default dtype'}{mode})"),
                                   ("out", str(out))])
        print(f"kept {kept} of {len(rows)} conversations in {out}\nnext: cai train sft --config configs/sft.yaml "
              f"data.path={out}", file=sys.stderr)
    if errors:
        raise PartialRunError(f"{errors} of {len(rows)} conversations failed (kept {kept}, filtered "
                              f"{sum(filtered.values())}); their errors are in the `trace` config of {out}")
    return manifest


class Feed:
    """The engine requests in flight for a run's conversations: normally one per conversation, its next step.

    While fewer than `ahead_below` requests are in flight (the end of a run, where conversations wait on their
    own retried revisions and the engine idles), a revision that has failed the filters and is being sampled
    again by the engine (not served from the request cache) also sends its later attempts ahead of their
    turn. Each attempt's seed is fixed by its key and results are taken in attempt order, so the same
    attempt is taken as when they are sent one by one (on an engine whose samples do not depend on what else
    is in the batch: vLLM's bf16 kernels can differ in the last bits); tokens of attempts sent ahead and not
    needed are counted in `ahead_tokens`."""

    def __init__(self, engine: Engine, c, cfg: CritiqueConfig, ahead_below: int = 0):
        self.engine, self.c, self.cfg, self.ahead_below = engine, c, cfg, ahead_below
        self.pending: dict[str, tuple[Conversation, int, int, str | None]] = {}  # rid -> conv, step, attempt, request
        self.sent: dict[str, int] = {}  # conversation id -> last attempt sent of its current step
        self.early: dict[str, dict[int, tuple[Any, str | None]]] = {}  # results that came before their turn
        self.revising: dict[str, Conversation] = {}  # conversations whose current step is a revision
        self.live: set[str] = set()  # conversations whose current attempt is being generated (not a cache hit)
        self.ahead_tokens = 0

    def send(self, conv: Conversation, attempt: int | None = None) -> None:
        """Send the conversation's current step (or a later `attempt` of it) to the engine."""
        a = conv.attempt if attempt is None else attempt
        rid, msgs, params, request = conv.next_request(self.c, self.cfg, attempt=a)
        k = len(conv.steps)
        self.pending[rid] = (conv, k, a, request)
        self.sent[conv.id] = a
        if step_name(k)[0] == "revision":
            self.revising[conv.id] = conv
        hits = getattr(self.engine, "cache_hits", 0)
        self.engine.submit(rid, self.engine.format_chat(msgs), params)
        if a == conv.attempt:
            (self.live.add if getattr(self.engine, "cache_hits", 0) == hits else self.live.discard)(conv.id)

    def take(self, rid: str, res) -> tuple[Conversation, list[bool]]:
        """Apply a result; returns its conversation and `advance`'s answer for each attempt it could take
        now, in order (none: the result is for a later attempt, or no longer needed)."""
        conv, k, a, request = self.pending.pop(rid)
        if conv.done or k != len(conv.steps) or a < conv.attempt:  # sent ahead, not needed
            self.ahead_tokens += _tokens(res)
            return conv, []
        if a > conv.attempt:  # sent ahead: its turn comes when the attempts before it fail
            self.early.setdefault(conv.id, {})[a] = (res, request)
            return conv, []
        takes = [conv.advance(res, request, self.cfg)]
        while not takes[-1] and (nxt := self.early.get(conv.id, {}).pop(conv.attempt, None)) is not None:
            takes.append(conv.advance(*nxt, self.cfg))
        if takes[-1] or conv.done:
            self.ahead_tokens += sum(_tokens(r) for r, _ in self.early.pop(conv.id, {}).values())
            self.revising.pop(conv.id, None)
        elif self.sent[conv.id] < conv.attempt:  # the attempt now due was not sent ahead
            self.send(conv)
        return conv, takes

    def top_up(self) -> None:
        """While the engine holds fewer than `ahead_below` requests, send later attempts of retried
        revisions (of the conversations with the fewest sent ahead first)."""
        if len(self.pending) >= self.ahead_below:  # called after every poll: cheap while the engine is full
            return
        # (sent ahead, -attempt, position): the order `min` over the conversations would pick them in
        ready = [(self.sent[v.id] - v.attempt, -v.attempt, i, v) for i, v in enumerate(self.revising.values())
                 if v.attempt and v.id in self.live and self.sent[v.id] < self.cfg.retries]
        heapq.heapify(ready)
        while ready and len(self.pending) < self.ahead_below:
            _, neg_attempt, i, conv = heapq.heappop(ready)
            self.send(conv, self.sent[conv.id] + 1)
            if self.sent[conv.id] < self.cfg.retries:
                heapq.heappush(ready, (self.sent[conv.id] - conv.attempt, neg_attempt, i, conv))


def _tokens(res) -> int:
    return sum(len(o.token_ids) for o in res.outputs) if res.ok else 0


def plan(*, prompts: str | Path | list[dict], out: str | Path, constitution: Any = "harmless",
         config: CritiqueConfig | None = None, column: str = "prompt", limit: int | None = None,
         engine: Engine | EngineConfig, cache: str | Path | None = None) -> dict[str, Any]:
    """What a run would do, from the run directory and the request cache alone (generates nothing):
    how many conversations it would regenerate, from which round, and how many requests that takes."""
    cfg = config or CritiqueConfig()
    c, rows, sampler = _inputs(constitution, prompts, column, limit, cfg)
    engine = _open(engine, cache, cfg.seed, tokenizer_only=True)
    run_file = Path(out) / ".cai" / "run.json"
    same = run_file.is_file() and json.loads(run_file.read_text()).get("fingerprint") == fingerprint(
        run_config(c, rows, engine, cfg))
    records = RecordLog(Path(out) / ".cai" / "records" / "conversations").load() if same else {}
    finished, regen, requests, from_round = 0, 0, 0, Counter()
    stops, examples = early_stops(cfg, engine), few_shot_texts(c)
    for r in rows:
        if r["id"] in records and not records[r["id"]]["error"]:  # finished, filtered or too long
            finished += 1
            continue
        conv = new_conversation(r, sampler, cfg.rounds, stops, examples)
        while not conv.done:
            _, msgs, params, request = conv.next_request(c, cfg)
            hit = engine.lookup(engine.format_chat(msgs), params)
            if hit is None or not hit.ok:
                k = len(conv.steps)
                regen, requests = regen + 1, requests + conv.n_steps - k
                from_round["answer" if k == 0 else f"round {(k + 1) // 2}"] += 1
                break
            conv.advance(hit, request, cfg)
    existing = run_file.is_file() and not same
    return {"conversations": len(rows), "finished": finished, "cached": len(rows) - finished - regen,
            "regenerate": regen, "requests": requests, "from": dict(sorted(from_round.items())),
            "needs_overwrite": existing}


# ---- helpers ---------------------------------------------------------------------------------------------

def early_stops(cfg: CritiqueConfig, engine) -> tuple[str, ...]:
    """The scaffold markers revisions stop on, when the engine reports which stop string matched (else a
    revision cut at a marker would look like one that ended by itself)."""
    return SCAFFOLD_STOPS if cfg.early_stop and getattr(engine, "reports_stop", False) else ()


def few_shot_texts(c) -> tuple[str, ...]:
    """Every turn of the constitution's few-shot critique conversations (what the `copy` filter looks for)."""
    return tuple(m["content"] for m in few_shot_critique_messages(c))


def _steps_bar(total: int, engine):
    """A bar over engine steps, not conversations: conversations all finish near the end, steps do not."""
    return Progress(total, "critique", engine, unit="step")


def _inputs(constitution, prompts, column, limit, cfg):
    c = load_constitution(constitution) if isinstance(constitution, (str, Path)) else constitution
    if not c.critiques:
        raise InputError(f"constitution {c.name!r} has no critique principles", field="critiques")
    rows = load_prompts(prompts, column=column, limit=limit) if not isinstance(prompts, list) else prompts
    return c, rows, PrincipleSampler(c.critiques, cfg.seed)


def run_config(c, rows, engine, cfg: CritiqueConfig) -> dict[str, Any]:
    """What fixes a run's output: a directory holding a run with another one is not silently reused."""
    digest = hashlib.sha256(json.dumps([[r["id"], r["prompt"]] for r in rows], sort_keys=True).encode())
    return {"stage": "critique", "prompts": digest.hexdigest()[:16], "n_prompts": len(rows),
            "model_hash": engine.model_hash, "constitution_hash": c.hash, **cfg.to_dict()}


def _open(engine: Engine | EngineConfig, cache, seed: int, *, tokenizer_only: bool = False, out=None, prompts=None,
          work_tokens: int | None = None):
    if isinstance(engine, CachedEngine):
        return engine
    if not isinstance(engine, EngineConfig):
        return CachedEngine(engine, RequestCache(cache) if cache else None)
    if tokenizer_only and engine.backend != "openai":
        return CachedEngine(_TokenizerOnly(engine.model, engine.max_model_len,
                                           reports_stop=(engine.backend or default_engine()) != "openai"),
                            None if engine.no_cache else RequestCache(engine.cache or default_cache_path()))
    return as_engine(engine, seed=seed, out=str(out) if out else None,
                     inputs=[prompts] if isinstance(prompts, (str, Path)) else [], work_tokens=work_tokens,
                     text_only=True)


class _TokenizerOnly:
    """Just enough of an engine to render and address requests (no weights loaded): for dry runs."""
    name = "none"

    def __init__(self, model: str, max_model_len: int, reports_stop: bool):
        from transformers import AutoTokenizer

        path = resolve_model(model)
        self.model_id, self.model_hash, self.max_model_len = str(model), model_hash(path), max_model_len
        self.reports_stop = reports_stop  # as the engine of the real run (its requests carry the same stops)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
