"""`cai critique`: flags, `--config FILE.yaml` and `KEY=VALUE` overrides become one `CritiqueStage`, which
`run_critique` runs (or `plan_critique` reports on, for `--dry-run`)."""
from __future__ import annotations

import argparse
import json
import sys

from cai.critique.config import FILTERS, STEPS, CritiqueStage
from cai.critique.stage import plan_critique, run_critique
from cai.stage import add_config_args, add_engine_args, config_run, stage_config_from_args

SAMPLING = ("max_tokens", "temperature", "top_p", "frequency_penalty")

# flag dest -> field of `CritiqueStage` (the sampling flags: per step, in `stage_config`)
FLAGS = {"prompts": "prompts", "out": "out", "model": "model", "constitution": "constitution", "column": "column",
         "limit": "limit", "rounds": "rounds", "seed": "seed", "system": "system", "retries": "retries",
         "few_shot": "few_shot"}


def register(sub: argparse._SubParsersAction) -> None:
    d = CritiqueStage()
    p = sub.add_parser("critique", help="SL-CAI: critique and revise answers; writes `sft`, `prefs`, `trace`",
                       description="Answer each prompt, then critique and revise the answer against a sampled "
                       "principle for each round. Interrupted runs resume; a rerun after editing a principle "
                       "regenerates only what that principle touched (request cache).")
    p.add_argument("--constitution", default=None, help=f"built-in name or YAML path (default {d.constitution})")
    p.add_argument("--prompts", default=None, help="JSONL/CSV/Parquet file, dataset dir or hub id "
                   "(default: shipped red-team prompts)")
    p.add_argument("--column", default=None, help=f"prompt column (default: {d.column})")
    p.add_argument("--limit", type=int, default=None, help="use only the first N prompts")
    p.add_argument("--out", default=None, help="output dataset directory (required unless the config names it)")
    p.add_argument("--rounds", type=int, default=None, help=f"critique -> revision rounds (default {d.rounds})")
    p.add_argument("--seed", type=int, default=None, help=f"(default {d.seed})")
    p.add_argument("--system", default=None, help="system prompt of the initial answer")
    p.add_argument("--few-shot", type=int, default=None, metavar="N", help="put the constitution's first N "
                   f"few-shot critique conversations before each request (default {d.few_shot})")
    p.add_argument("--no-few-shot", action="store_true", help="leave out the constitution's few-shot examples")
    p.add_argument("--max-tokens", type=int, default=None, help="max new tokens of every step (default: "
                   + ", ".join(f"{s} {getattr(d, s).max_tokens}" for s in STEPS) + ")")
    p.add_argument("--temperature", type=float, default=None,
                   help=f"temperature of every step (default {d.answer.temperature})")
    p.add_argument("--top-p", type=float, default=None, help=f"top_p of every step (default {d.answer.top_p})")
    p.add_argument("--frequency-penalty", type=float, default=None,
                   help="frequency penalty of every step (default: " + ", ".join(
                       f"{s} {getattr(d, s).frequency_penalty}" for s in STEPS) + ")")
    for step in STEPS:
        p.add_argument(f"--{step}-max-tokens", type=int, default=None, help=f"override --max-tokens for {step}s")
        p.add_argument(f"--{step}-temperature", type=float, default=None, help=f"override --temperature for {step}s")
        p.add_argument(f"--{step}-top-p", type=float, default=None, help=f"override --top-p for {step}s")
        p.add_argument(f"--{step}-frequency-penalty", type=float, default=None,
                       help=f"override --frequency-penalty for {step}s")
    p.add_argument("--retries", type=int, default=None, help="sample a revision the filters would drop "
                   f"again with another seed, up to N times (default {d.retries})")
    p.add_argument("--filters", default=None, help="comma-separated filters on final revisions, or 'none' "
                   f"(default {','.join(d.filters)}; known: {','.join(FILTERS)})")
    p.add_argument("--dry-run", action="store_true", help="report what a run would regenerate, generate nothing")
    p.add_argument("--overwrite", action="store_true", help="replace an output dir from another configuration")
    add_engine_args(p, default_model=d.model)
    add_config_args(p)
    p.set_defaults(func=_cmd)


def stage_config(args) -> CritiqueStage:
    """Defaults <- `--config FILE.yaml` <- the flags given <- KEY=VALUE overrides. A step's own sampling flag
    (`--answer-max-tokens`) wins over the every-step one (`--max-tokens`)."""
    flags = dict(FLAGS)
    for step in STEPS:
        for name in SAMPLING:
            flags[f"{step}_{name}"] = f"{step}.{name}"
            if getattr(args, f"{step}_{name}") is None:
                setattr(args, f"{step}_{name}", getattr(args, name))
    if isinstance(args.filters, str):
        args.filters = _filters(args.filters)
        flags["filters"] = "filters"
    return stage_config_from_args(CritiqueStage, args, flags, switches={"no_few_shot": ("few_shot", False)})


def _filters(text: str) -> tuple[str, ...]:
    return () if text.strip() in ("", "none") else tuple(f.strip() for f in text.split(","))


def _cmd(args) -> int:
    stage = config_run(args, stage_config)
    if stage is None:
        return 0
    if args.dry_run:
        p, out = plan_critique(stage), stage.out
        print(f"{p['regenerate']} of {p['conversations']} conversations would be regenerated "
              f"({p['requests']} requests; {p['finished']} already finished in {out}, {p['cached']} fully "
              f"cached)" + (f"; from: {', '.join(f'{k} {v}' for k, v in p['from'].items())}" if p["from"] else ""))
        if p["needs_overwrite"]:
            print(f"{out} holds a run with another configuration: the run needs --overwrite", file=sys.stderr)
        print(json.dumps(p))
        return 0
    run_critique(stage, overwrite=args.overwrite)
    return 0
