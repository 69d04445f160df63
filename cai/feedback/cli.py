"""CLI of the feedback stage: `cai sample`, `cai label`, `cai rlaif` (`cai eval judge` reuses its labelling
flags). Flags, `--config FILE.yaml` and `KEY=VALUE` overrides become one stage config each
(`SampleStage`, `LabelStage`, `RlaifStage`), which its `run_*` function runs."""
from __future__ import annotations

import argparse

from cai.feedback.config import LabelConfig, LabelStage, RlaifStage, SampleConfig, SampleStage
from cai.feedback.label import run_label, run_rlaif
from cai.feedback.sample import run_sample
from cai.stage import add_config_args, add_engine_args, check_sampling_flags, config_run, stage_config_from_args

# flag dest -> field of `SampleConfig` / `LabelConfig`
SAMPLE_FLAGS = {k: k for k in ("n", "temperature", "top_p", "max_tokens", "pairing", "pairs_per_prompt", "system")}
LABEL_FLAGS = {k: k for k in ("principles", "top_k", "cot_max_tokens", "batch_pairs", "clamp")}
# on/off flag dest -> (field of `LabelConfig`, the value it sets)
LABEL_SWITCHES = {"cot": ("mode", "cot"), "one_order": ("both_orders", False), "no_few_shot": ("few_shot", False),
                  "no_clamp": ("clamp", None)}
INPUT_FLAGS = {k: k for k in ("prompts", "column", "limit", "out")}


def _sample_flags(p) -> None:
    d = SampleConfig()
    g = p.add_argument_group("sampling")
    g.add_argument("--prompts", default=None, help="prompt file or dataset (default: shipped red-team prompts)")
    g.add_argument("--column", default=None, help=f"prompt column (default {SampleStage().column})")
    g.add_argument("--n", type=int, default=None, help=f"responses per prompt (K; default {d.n})")
    g.add_argument("--temperature", type=float, default=None, help=f"(default {d.temperature})")
    g.add_argument("--top-p", type=float, default=None, help=f"(default {d.top_p})")
    g.add_argument("--max-tokens", type=int, default=None, help=f"(default {d.max_tokens})")
    g.add_argument("--pairing", choices=["all", "random"], default=None, help=f"(default {d.pairing})")
    g.add_argument("--pairs-per-prompt", type=int, default=None,
                   help=f"random pairing: pairs per prompt (default {d.pairs_per_prompt})")
    g.add_argument("--system", default=None, help="system prompt for the policy")
    g.add_argument("--limit", type=int, default=None, help="use only the first N prompts")


def add_label_flags(p) -> None:
    d = LabelConfig()
    g = p.add_argument_group("labelling")
    g.add_argument("--constitution", default=None, help=f"name or path (default: {LabelStage.constitution})")
    g.add_argument("--cot", action="store_true", help="chain-of-thought mode (compare_cot.j2), p clamped")
    g.add_argument("--clamp", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help=f"CoT clamp of each order's p (default {d.clamp[0]} {d.clamp[1]})")
    g.add_argument("--no-clamp", action="store_true", help="CoT: do not clamp")
    g.add_argument("--principles", type=int, default=None,
                   help=f"principles per comparison; k > 1 averages p (default {d.principles})")
    g.add_argument("--one-order", action="store_true", help="score only (A, B); no position debiasing")
    g.add_argument("--no-few-shot", action="store_true", help="leave out the constitution's few-shot examples")
    g.add_argument("--top-k", type=int, default=None, help=f"top log-probs read per prompt (<= 20; default {d.top_k})")
    g.add_argument("--cot-max-tokens", type=int, default=None, help=f"(default {d.cot_max_tokens})")
    g.add_argument("--batch-pairs", type=int, default=None,
                   help=f"pairs per engine batch (and per log flush; default {d.batch_pairs})")


def _run_flags(p, seed_help: str = "") -> None:
    p.add_argument("--out", default=None, help="output dataset dir (required unless the config names it)")
    p.add_argument("--seed", type=int, default=None, help=f"(default {SampleConfig().seed}){seed_help}")
    p.add_argument("--overwrite", action="store_true")


def register(sub: argparse._SubParsersAction) -> None:

    p = sub.add_parser("sample", help="K policy responses per prompt, paired; writes `samples` and `pairs`")
    _sample_flags(p)
    _run_flags(p)
    add_engine_args(p, default_model=SampleStage.model)
    add_config_args(p)
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser("label", help="AI preference labels for pairs; writes `prefs`")
    p.add_argument("--data", default=None, help="pairs: a `cai sample` dataset dir or a table with "
                   "prompt, response_a, response_b (required unless the config names it)")
    _run_flags(p)
    add_label_flags(p)
    add_engine_args(p, model_flag="--judge", default_model=LabelStage.judge)
    add_config_args(p)
    p.set_defaults(func=_cmd_label)

    p = sub.add_parser("rlaif", help="sample from a policy and label with a judge, in one dataset")
    _sample_flags(p)
    add_label_flags(p)
    _run_flags(p, "; seeds sampling and labelling")
    add_engine_args(p, default_model=RlaifStage.model)  # --model: the policy; the engine flags run the judge too
    p.add_argument("--judge", default=None, help="judge model (default: the policy model)")
    add_config_args(p)
    p.set_defaults(func=_cmd_rlaif)


def sample_stage_config(args) -> SampleStage:
    """Defaults <- `--config FILE.yaml` <- the flags given <- KEY=VALUE overrides."""
    check_sampling_flags(args)
    return stage_config_from_args(SampleStage, args, {**INPUT_FLAGS, **SAMPLE_FLAGS, "seed": "seed", "model": "model"})


def label_stage_config(args) -> LabelStage:
    """Defaults <- `--config FILE.yaml` <- the flags given <- KEY=VALUE overrides."""
    flags = {"data": "data", "out": "out", "seed": "seed", "model": "judge", "constitution": "constitution",
             **LABEL_FLAGS}
    return stage_config_from_args(LabelStage, args, flags, switches=LABEL_SWITCHES)


def rlaif_stage_config(args) -> RlaifStage:
    """Defaults <- `--config FILE.yaml` <- the flags given <- KEY=VALUE overrides. One `--seed` seeds both
    halves, and the engine flags describe the judge's engine too."""
    check_sampling_flags(args)
    flags = {**INPUT_FLAGS, "model": "model", "judge": "judge", "constitution": "constitution",
             "seed": ("sample.seed", "label.seed"), **{k: f"sample.{v}" for k, v in SAMPLE_FLAGS.items()},
             **{k: f"label.{v}" for k, v in LABEL_FLAGS.items()}}
    switches = {k: (f"label.{f}", v) for k, (f, v) in LABEL_SWITCHES.items()}
    return stage_config_from_args(RlaifStage, args, flags, switches=switches, engines=("engine", "judge_engine"))


def _cmd_sample(args) -> int:
    stage = config_run(args, sample_stage_config)
    if stage is not None:
        run_sample(stage, overwrite=args.overwrite)
    return 0


def _cmd_label(args) -> int:
    stage = config_run(args, label_stage_config)
    if stage is not None:
        run_label(stage, overwrite=args.overwrite)
    return 0


def _cmd_rlaif(args) -> int:
    stage = config_run(args, rlaif_stage_config)
    if stage is not None:
        run_rlaif(stage, overwrite=args.overwrite)
    return 0
