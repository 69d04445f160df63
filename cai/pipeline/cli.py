"""`cai run CONFIG.yaml [key=value ...] [--plan] [--from STAGE]`: run a pipeline, then write its report."""
from __future__ import annotations

import argparse
import sys

from cai.pipeline import load_pipeline, plan, print_plan, run
from cai.report import write_report


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a pipeline of stages declared in YAML (cached, resumable) and its report",
                       description="Run the stages of a pipeline YAML in order. Each stage's output goes to "
                       "RUN_DIR/stages/<name>-<key>, keyed by the hash of its inputs, so a rerun skips finished "
                       "stages and an edit reruns only what it touches. Overrides are dotted keys, e.g. "
                       "vars.model=runs/sft stages.sft.run.max_steps=10 run_dir=runs/try")
    p.add_argument("config", help="pipeline YAML (see configs/hf-recipe.yaml)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides of the pipeline YAML")
    p.add_argument("--plan", action="store_true", help="print what would run and why; run nothing")
    p.add_argument("--from", dest="from_stage", metavar="STAGE", help="rerun STAGE and every stage after it")
    p.add_argument("--no-report", action="store_true", help="do not write report.html / report.md at the end")
    p.set_defaults(func=_cmd)


def _cmd(args) -> int:
    p = load_pipeline(args.config, args.overrides)
    if args.plan:
        print_plan(plan(p, args.from_stage))
        return 0
    run(p, args.from_stage)
    if p.report and not args.no_report:
        paths = write_report(p.run_dir)
        print(f"report: {paths['html']}", file=sys.stderr)
    return 0
