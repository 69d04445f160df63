"""`cai critique`: the command-line face of `cai.critique.critique` (and `plan` for `--dry-run`)."""
from __future__ import annotations

import argparse
import json
import sys

from cai.critique.config import FILTERS, STEPS, CritiqueConfig
from cai.critique.run import critique, plan
from cai.data.sources import DEFAULT_PROMPTS
from cai.engine.base import SamplingParams
from cai.errors import InputError
from cai.stage import add_engine_args, engine_config_from_args

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
    p.add_argument("--out", required=True, help="output dataset directory")
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
    p.set_defaults(func=_cmd)


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

    filters = () if args.filters.strip() in ("", "none") else tuple(f.strip() for f in args.filters.split(","))
    return CritiqueConfig(rounds=args.rounds, **{s: params(s) for s in STEPS}, system=args.system,
                          few_shot=not args.no_few_shot, filters=filters, retries=args.retries, seed=args.seed)


def _cmd(args) -> int:
    import os

    if args.verbose:
        os.environ["CAI_VERBOSE"] = "1"  # read by the engine when it starts
    cfg = config_from_args(args)
    common = {"prompts": args.prompts, "out": args.out, "constitution": args.constitution, "config": cfg,
              "column": args.column, "limit": args.limit, "engine": engine_config_from_args(args)}
    if args.dry_run:
        p = plan(**common)
        print(f"{p['regenerate']} of {p['conversations']} conversations would be regenerated "
              f"({p['requests']} requests; {p['finished']} already finished in {args.out}, {p['cached']} fully "
              f"cached)" + (f"; from: {', '.join(f'{k} {v}' for k, v in p['from'].items())}" if p["from"] else ""))
        if p["needs_overwrite"]:
            print(f"{args.out} holds a run with another configuration: the run needs --overwrite", file=sys.stderr)
        print(json.dumps(p))
        return 0
    critique(**common, overwrite=args.overwrite)
    return 0
