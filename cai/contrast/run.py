"""`cai contrast`: RLCD preference pairs, labelled by construction (Yang et al. 2023, arXiv 2307.12950).

1. inputs: the constitution, the principle-framed prompts and the benign prompts.
2. framings: a seeded principle per principle-framed prompt; both sides resolved (`framing.py`).
3. answers: every (prompt, side) request goes to the engine in one continuous feed; the two sides of a
   pair share a request seed. Finished answers are logged, so a killed run resumes.
4. filter: near-identical pairs (no signal), empty answers, and benign pairs whose positive answer is
   a refusal are dropped and counted.
5. tables: `prefs` (TRL columns, chosen = positive, p_chosen = 1), `sft` (prompt + positive answer)
   and `pairs` (every pair, kept or not, with both framings and the reason it was dropped).
"""
from __future__ import annotations

import difflib
import json
import time
from collections import Counter
from typing import Any

from cai.constitution import PrincipleSampler, load_constitution
from cai.contrast.config import ContrastConfig
from cai.contrast.framing import Framed, benign_framing, harmful_framing
from cai.data.layout import write_dataset
from cai.data.sources import as_messages, load_prompts
from cai.data.store import RunDir, check_output_dir
from cai.engine import SamplingParams
from cai.engine.config import engine_config
from cai.errors import InputError, PartialRunError
from cai.evaluate.refusal import detect
from cai.stage import Progress, open_engine, print_summary, provenance, request_seed

SIDES = ("positive", "negative")

CARD = """RLCD preference pairs (Yang et al. 2023, arXiv 2307.12950) from `{model}` under constitution
`{constitution}`. Each prompt was answered under a positive framing (follow the principle) and a
negative one (violate it); the positive answer is `chosen` by construction (`p_chosen` = 1).

Configs: `prefs` (TRL conversational `prompt`/`chosen`/`rejected`, trains `cai train dpo|rm` as is),
`sft` (`messages`: prompt and positive answer, for `cai train sft`), `pairs` (every pair with both
framings, its similarity, and why it was dropped, if it was). `set` is `principles` for prompts framed
by a sampled principle and `benign` for benign prompts (helpful answer vs needless refusal).
"""


def similarity(a: str, b: str) -> float:
    """Word-level similarity of two answers in [0, 1]: difflib's ratio 2·M / (|a| + |b|) over word
    sequences (M = matched words). Identical texts give 1; texts sharing no word give 0."""
    wa, wb = a.split(), b.split()
    if not wa and not wb:
        return 1.0
    return difflib.SequenceMatcher(None, wa, wb, autojunk=False).ratio()


def drop_reason(row: dict[str, Any], cfg: ContrastConfig) -> str | None:
    """Why a pair is not used for training (None: kept)."""
    if row["error"]:
        return "error"
    if not row["positive"].strip() or not row["negative"].strip():
        return "empty"
    if row["similarity"] >= cfg.max_similarity:
        return "near_identical"
    if cfg.drop_benign_refusals and row["set"] == "benign" and detect(row["positive"]).refusal:
        return "benign_positive_refuses"
    return None


def _messages(prompt, side) -> tuple[list[dict[str, str]], bool]:
    """Chat messages of one side, and whether the last (assistant prefix) message stays open."""
    msgs = as_messages(prompt, side.system)
    if side.prefix:
        return msgs + [{"role": "assistant", "content": side.prefix}], True
    return msgs, False


def answer_pairs(engine, run, items: list[tuple[dict, Framed]], cfg: ContrastConfig) -> dict[str, dict]:
    """Answer both sides of every prompt not yet logged, in one continuous feed; return all records
    `{f"{id}:{side}": {text, error, tokens}}`. Errors are retried on a rerun."""

    log = run.log("answers")
    done = {k: v for k, v in log.load().items() if not v.get("error")}
    params = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens)
    prefix = {}
    for row, fr in items:
        for side_name in SIDES:
            key = f"{row['id']}:{side_name}"
            if key in done:
                continue
            side = getattr(fr, side_name)
            if not side.generate:  # the prefix is the whole answer: nothing to ask the engine
                done[key] = {"key": key, "text": side.prefix, "error": None, "tokens": 0}
                log.append(done[key])
                continue
            msgs, open_last = _messages(row["prompt"], side)
            prefix[key] = side.prefix
            engine.submit(key, engine.format_chat(msgs, continue_final_message=open_last),
                          params.replace(seed=request_seed(cfg.seed, row["id"])))
    bar = Progress(len(prefix), "contrast", engine)  # only the answers that need a request
    while engine.has_unfinished():
        for key, res in engine.poll():
            text = prefix[key] + res.outputs[0].text if res.ok else None
            rec = {"key": key, "text": text, "error": res.error,
                   "tokens": len(res.outputs[0].token_ids) if res.ok else 0}
            log.append(rec)
            done[key] = rec
            bar.update(request_id=key)
    bar.close()
    log.close()
    return done


def contrast(cfg: ContrastConfig, *, engine=None) -> dict[str, Any]:
    """Stage entry point of `cai contrast`; writes `prefs`, `sft` and `pairs` under `cfg.out` and returns
    the manifest. `engine` (tests, callers holding one) replaces the engine the config describes."""

    t0 = time.perf_counter()
    # 1. inputs
    c = load_constitution(cfg.constitution)
    if not c.critiques:
        raise InputError("the constitution has no critique principles to frame prompts with", field="critiques",
                         file=c.source_path)
    sets = [("principles", cfg.prompts, cfg.limit)]
    sets += [("benign", cfg.benign, cfg.benign_limit)] if cfg.benign else []
    rows = []
    for name, path, limit in sets:
        for r in load_prompts(path, column=cfg.column, limit=limit or None):
            rows.append({**r, "id": f"{name}/{r['id']}", "prompt_id": r["id"], "set": name})
    # 2. framings
    sampler = PrincipleSampler(c.critiques, seed=cfg.seed)
    items = [(r, harmful_framing(c, sampler.sample(key=r["id"], k=1)[0]) if r["set"] == "principles"
              else benign_framing(c)) for r in rows]
    # 3. answers
    inputs = [p for _, p, _ in sets]
    check_output_dir(cfg.out, inputs)  # before the model loads: a mistaken --out costs no model load
    if engine is None:
        engine = _open(cfg)
    run = RunDir(cfg.out, {"stage": "contrast", "model_hash": engine.model_hash, "constitution": c.hash,
                           "prompts": [str(p) for _, p, _ in sets], "n_prompts": len(rows),
                           "config": {k: v for k, v in cfg.to_dict().items() if k not in ("out", "overwrite")}},
                 overwrite=cfg.overwrite, inputs=inputs)
    done = answer_pairs(engine, run, items, cfg)
    # 4. filter
    prov = provenance(engine, seed=cfg.seed, sampling={"temperature": cfg.temperature, "top_p": cfg.top_p,
                                                       "max_tokens": cfg.max_tokens},
                      constitution=c.name, constitution_hash=c.hash, role="policy", method="rlcd")
    pairs, prefs, sft, drops = [], [], [], Counter()
    for r, fr in items:
        pos, neg = done.get(f"{r['id']}:positive", {}), done.get(f"{r['id']}:negative", {})
        row = {"id": r["id"], "prompt_id": r["prompt_id"], "set": r["set"], "principle_id": fr.principle_id,
               "prompt": r["prompt"], "positive": pos.get("text") or "", "negative": neg.get("text") or "",
               "error": pos.get("error") or neg.get("error"),
               "framing": json.dumps({s: vars(getattr(fr, s)) for s in SIDES})}
        row["similarity"] = round(similarity(row["positive"], row["negative"]), 4)
        row["drop_reason"] = drop_reason(row, cfg)
        drops[row["drop_reason"] or "kept"] += 1
        pairs.append({**row, **prov})
        if row["drop_reason"]:
            continue
        # 5. tables
        meta = {"set": r["set"], "principle_ids": [fr.principle_id] if fr.principle_id else [],
                "framing": row["framing"], "similarity": row["similarity"], **prov}
        prefs.append({"id": r["id"], "prompt_id": r["prompt_id"], "prompt": as_messages(r["prompt"]),
                      "chosen": [{"role": "assistant", "content": row["positive"]}],
                      "rejected": [{"role": "assistant", "content": row["negative"]}], "p_chosen": 1.0, **meta})
        sft.append({"id": r["id"], "prompt_id": r["prompt_id"],
                    "messages": as_messages(r["prompt"]) + [{"role": "assistant", "content": row["positive"]}],
                    **meta})
    stats = _stats(pairs, drops)
    manifest = {"stage": "contrast", **stats, "provenance": prov, "seconds": round(time.perf_counter() - t0, 2),
                "generated_tokens": engine.generated_tokens, "engine_requests": engine.engine_requests,
                "cache_hits": engine.cache_hits}
    write_dataset(cfg.out, {"prefs": prefs, "sft": sft, "pairs": pairs}, manifest, title="cai contrast: RLCD pairs",
                  body=CARD.format(model=engine.model_id, constitution=c.name))
    print_summary("contrast", [("pairs", len(pairs)), ("kept", len(prefs)),
                               *[(f"dropped: {k}", v) for k, v in sorted(drops.items()) if k != "kept"],
                               ("seconds", manifest["seconds"]), ("out", cfg.out)])
    if drops["error"]:
        raise PartialRunError(f"{drops['error']} of {len(pairs)} pairs failed; they are recorded in {cfg.out}")
    return {"out": cfg.out, "pairs": len(pairs), "kept": len(prefs), "dropped": {k: v for k, v in drops.items()
                                                                                   if k != "kept"}}


def _stats(pairs: list[dict], drops: Counter) -> dict[str, Any]:
    """Counts for the manifest, and per set how often each side refuses (a check that the framings
    did what they say: positive refuses on harmful prompts, never on benign ones)."""
    per_set: dict[str, Any] = {}
    for name in sorted({p["set"] for p in pairs}):
        ps = [p for p in pairs if p["set"] == name and not p["error"]]
        n = max(len(ps), 1)
        per_set[name] = {"pairs": len(ps), "kept": sum(1 for p in ps if not p["drop_reason"]),
                         **{f"{s}_refusal_rate": round(sum(detect(p[s]).refusal for p in ps) / n, 4) for s in SIDES},
                         **{f"{s}_mean_words": round(sum(len(p[s].split()) for p in ps) / n, 1) for s in SIDES}}
    return {"pairs": len(pairs), "kept": drops["kept"], "dropped": {k: v for k, v in sorted(drops.items())
                                                                   if k != "kept"},
            "near_identical": drops["near_identical"], "per_set": per_set,
            "per_principle": dict(sorted(Counter(p["principle_id"] for p in pairs if p["principle_id"]).items()))}


def _open(cfg: ContrastConfig):
    return open_engine(engine_config(cfg.model, cfg.engine), seed=cfg.seed, text_only=True)
