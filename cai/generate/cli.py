"""`cai generate`: flags, `--config FILE.yaml` and `KEY=VALUE` overrides become one `GenerateStage`."""
from __future__ import annotations

import argparse

from cai.generate.config import GenerateStage
from cai.generate.run import run_generate
from cai.stage import add_config_args, add_engine_args, check_sampling_flags, config_run, stage_config_from_args

# flag dest -> field of `GenerateStage`
FLAGS = {"prompts": "prompts", "column": "column", "out": "out", "system": "system", "seed": "seed",
         "limit": "limit", "model": "model", "temperature": "sampling.temperature", "top_p": "sampling.top_p",
         "max_tokens": "sampling.max_tokens", "n": "sampling.n"}


def register(sub: argparse._SubParsersAction) -> None:
    d = GenerateStage()
    p = sub.add_parser("generate", help="answer prompts with a model; writes the `responses` config")
    p.add_argument("--prompts", default=None, help="JSONL/CSV/Parquet file, dataset dir or hub id "
                   "(default: shipped red-team prompts)")
    p.add_argument("--column", default=None, help=f"prompt column (default {d.column})")
    p.add_argument("--out", default=None, help="output dataset directory (required unless the config names it)")
    p.add_argument("--system", default=None, help="system prompt")
    p.add_argument("--temperature", type=float, default=None, help=f"(default {d.sampling.temperature})")
    p.add_argument("--top-p", type=float, default=None, help=f"(default {d.sampling.top_p})")
    p.add_argument("--max-tokens", type=int, default=None, help=f"(default {d.sampling.max_tokens})")
    p.add_argument("--n", type=int, default=None, help=f"completions per prompt (default {d.sampling.n})")
    p.add_argument("--seed", type=int, default=None, help=f"(default {d.seed})")
    p.add_argument("--limit", type=int, default=None, help="use only the first N prompts")
    p.add_argument("--overwrite", action="store_true", help="replace an output dir from another configuration")
    add_engine_args(p, default_model=d.model)
    add_config_args(p)
    p.set_defaults(func=_cmd)


def stage_config(args) -> GenerateStage:
    """Defaults <- `--config FILE.yaml` <- the flags given <- KEY=VALUE overrides."""
    check_sampling_flags(args)
    return stage_config_from_args(GenerateStage, args, FLAGS)


def _cmd(args) -> int:
    stage = config_run(args, stage_config)
    if stage is not None:
        run_generate(stage, overwrite=args.overwrite)
    return 0
