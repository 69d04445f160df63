"""`cai report RUN_DIR`: rebuild a pipeline run's report.html and report.md."""
from __future__ import annotations

import argparse

from cai.report import write_report


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="(re)build report.html and report.md of a `cai run` directory")
    p.add_argument("run_dir", help="the pipeline's run directory (RUN_DIR, holding pipeline.json)")
    p.set_defaults(func=_cmd)


def _cmd(args) -> int:
    paths = write_report(args.run_dir)
    print(paths["html"])
    print(paths["md"])
    return 0
