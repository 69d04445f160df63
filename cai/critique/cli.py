"""`cai critique`: the command-line face of `cai.critique.critique` (and `plan` for `--dry-run`)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from cai.critique.config import FILTERS, STEPS, CritiqueConfig
from cai.critique.run import critique, plan
from cai.data.sources import DEFAULT_PROMPTS
from cai.engine.base import SamplingParams
from cai.errors import InputError
from cai.pipeline.adapters import CritiqueStage, core, engine_config
from cai.stage import (
    ENGINE_SHORTCUTS,
    add_config_args,
    add_engine_args,
    config_run,
    engine_config_from_args,
    stage_config_from_args,
    uses_config,
)

DEFAULT_CONFIG = CritiqueConfig()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("critique", help="SL-CAI: critique and revise answers; writes `sft`, `prefs`, `trace`",
                       description="Answer each prompt, then critique and revise the answer against a sampled "
                       "principle for each round. Interrupted runs resume; a rerun after editing a principle "
                       "regenerates only what that principle touched (request cache).")
    p.add_argument("--constitution", default="harmless", help="built-in name or YAML path (default harmless)")
    p.add_argument("--prompts", default=DEFAULT_PROMPTS, help="JSONL/CSV/Parquet file, dataset dir or hub id")
    p.add_argument("--column", default="prompt", help="prompt column (default: prompt)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N prompts")
    p.add_argument("--out", default=None, help="output dataset directory (required unless the config names it)")
    p.add_argument("--rounds", type=int, default=2, help="critique -> revision rounds (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--system", default=None, help="system prompt of the initial answer")
    p.add_argument("--no-few-shot", action="store_true", help="leave out the constitution's few-shot examples")
    d = DEFAULT_CONFIG
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
    p.add_argument("--retries", type=int, default=d.retries, help="sample a revision the filters would drop "
                   f"again with another seed, up to N times (default {d.retries})")
    p.add_argument("--filters", default=",".join(FILTERS),
                   help=f"comma-separated filters on final revisions, or 'none' (default {','.join(FILTERS)})")
    p.add_argument("--dry-run", action="store_true", help="report what a run would regenerate, generate nothing")
    p.add_argument("--overwrite", action="store_true", help="replace an output dir from another configuration")
    p.add_argument("--verbose", action="store_true", help="show every engine log line (default: warnings that matter)")
    add_engine_args(p)
    add_config_args(p)
    p.set_defaults(func=_cmd, parser=p)


def config_from_args(args):

    def params(step: str) -> SamplingParams:
        base = getattr(DEFAULT_CONFIG, step)

        def pick(name: str):
            own, every = getattr(args, f"{step}_{name}"), getattr(args, name)
            return own if own is not None else every if every is not None else getattr(base, name)

        try:
            return base.replace(temperature=pick("temperature"), top_p=pick("top_p"), max_tokens=pick("max_tokens"),
                                frequency_penalty=pick("frequency_penalty"))
        except ValueError as e:
            raise InputError(str(e), field=f"--{step}-*") from None

    if not args.out:
        raise InputError("the following arguments are required: --out", field="--out")
    filters = _filters(args.filters)
    return CritiqueConfig(rounds=args.rounds, **{s: params(s) for s in STEPS}, system=args.system,
                          few_shot=not args.no_few_shot, filters=filters, retries=args.retries, seed=args.seed)


# flag dest -> field of `CritiqueStage`, for `--config` runs (sampling flags: per step, below)
SHORTCUTS = {"prompts": "prompts", "out": "out", "model": "model", "constitution": "constitution",
             "column": "column", "limit": "limit", "rounds": "rounds", "seed": "seed", "system": "system",
             "retries": "retries", **ENGINE_SHORTCUTS}


def stage_config(args) -> CritiqueStage:
    """`--config FILE.yaml` + the flags given + KEY=VALUE overrides -> the stage config."""
    shortcuts = dict(SHORTCUTS)
    for step in STEPS:
        for name in ("max_tokens", "temperature", "top_p"):
            shortcuts[f"{step}_{name}"] = f"{step}.{name}"
    for name in ("max_tokens", "temperature", "top_p"):  # the every-step flag, unless the step's own is given
        if getattr(args, name) is not None:
            for step in STEPS:
                if getattr(args, f"{step}_{name}") is None:
                    setattr(args, f"{step}_{name}", getattr(args, name))
    cfg = stage_config_from_args(CritiqueStage, args.parser, args, shortcuts)
    if args.no_few_shot or args.filters != args.parser.get_default("filters"):
        filters = cfg.filters if args.filters == args.parser.get_default("filters") else _filters(args.filters)
        cfg = dataclasses.replace(cfg, few_shot=cfg.few_shot and not args.no_few_shot, filters=filters)
    return cfg


def _filters(text: str) -> tuple[str, ...]:
    return () if text.strip() in ("", "none") else tuple(f.strip() for f in text.split(","))


def _cmd(args) -> int:
    if args.verbose:
        os.environ["CAI_VERBOSE"] = "1"  # read by the engine when it starts
    if uses_config(args):
        stage = config_run(args, stage_config)
        if stage is None:
            return 0
        common = {"prompts": stage.prompts, "out": stage.out, "constitution": stage.constitution,
                  "config": core(CritiqueConfig, stage), "column": stage.column, "limit": stage.limit or None,
                  "engine": engine_config(stage.model, stage.engine)}
    else:
        common = {"prompts": args.prompts, "out": args.out, "constitution": args.constitution,
                  "config": config_from_args(args), "column": args.column, "limit": args.limit,
                  "engine": engine_config_from_args(args)}
    out = common["out"]
    if args.dry_run:
        p = plan(**common)
        print(f"{p['regenerate']} of {p['conversations']} conversations would be regenerated "
              f"({p['requests']} requests; {p['finished']} already finished in {out}, {p['cached']} fully "
              f"cached)" + (f"; from: {', '.join(f'{k} {v}' for k, v in p['from'].items())}" if p["from"] else ""))
        if p["needs_overwrite"]:
            print(f"{out} holds a run with another configuration: the run needs --overwrite", file=sys.stderr)
        print(json.dumps(p))
        return 0
    critique(**common, overwrite=args.overwrite)
    return 0
