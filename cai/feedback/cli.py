"""CLI of the feedback stage: `cai sample`, `cai label`, `cai rlaif` (`cai eval judge` reuses its labelling flags)."""
from __future__ import annotations

import argparse
import dataclasses

from cai.data.sources import DEFAULT_PROMPTS
from cai.errors import InputError
from cai.feedback.config import LabelConfig, SampleConfig
from cai.feedback.label import label, rlaif
from cai.feedback.sample import sample
from cai.generate import check_sampling_flags
from cai.pipeline.adapters import LabelStage, RlaifStage, SampleStage, core, engine_config
from cai.stage import (
    ENGINE_SHORTCUTS,
    add_config_args,
    add_engine_args,
    config_run,
    engine_config_from_args,
    stage_config_from_args,
    uses_config,
)

DEFAULT_CONSTITUTION = "harmless"


def _sample_flags(p) -> None:
    g = p.add_argument_group("sampling")
    g.add_argument("--prompts", default=None, help="prompt file or dataset (default: shipped red-team prompts)")
    g.add_argument("--column", default="prompt")
    g.add_argument("--n", type=int, default=4, help="responses per prompt (K)")
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--max-tokens", type=int, default=256)
    g.add_argument("--pairing", choices=["all", "random"], default="all")
    g.add_argument("--pairs-per-prompt", type=int, default=1, help="random pairing: pairs per prompt")
    g.add_argument("--system", default=None, help="system prompt for the policy")
    g.add_argument("--limit", type=int, default=None, help="use only the first N prompts")


def add_label_flags(p) -> None:
    g = p.add_argument_group("labelling")
    g.add_argument("--constitution", default=DEFAULT_CONSTITUTION, help="name or path (default: harmless)")
    g.add_argument("--cot", action="store_true", help="chain-of-thought mode (compare_cot.j2), p clamped")
    g.add_argument("--clamp", type=float, nargs=2, default=[0.4, 0.6], metavar=("LO", "HI"),
                   help="CoT clamp of each order's p (default 0.4 0.6)")
    g.add_argument("--no-clamp", action="store_true", help="CoT: do not clamp")
    g.add_argument("--principles", type=int, default=1, help="principles per comparison; k > 1 averages p")
    g.add_argument("--one-order", action="store_true", help="score only (A, B); no position debiasing")
    g.add_argument("--no-few-shot", action="store_true", help="leave out the constitution's few-shot examples")
    g.add_argument("--top-k", type=int, default=20, help="top log-probs read per prompt (<= 20)")
    g.add_argument("--cot-max-tokens", type=int, default=192)
    g.add_argument("--batch-pairs", type=int, default=256, help="pairs per engine batch (and per log flush)")


def flag_errors(build):
    """Build a config from flags; a field error names the flag (`top_p` -> `--top-p`)."""
    try:
        return build()
    except InputError as e:
        if e.field and e.file is None and not e.field.startswith("-"):
            raise InputError(e.message, field="--" + e.field.replace("_", "-")) from None
        raise


def label_config_from_args(args, seed: int):
    return flag_errors(lambda: _label_config_unchecked(args, seed))


def _label_config_unchecked(args, seed: int):
    return LabelConfig(mode="cot" if args.cot else "compare", principles=args.principles,
                       both_orders=not args.one_order, few_shot=not args.no_few_shot, top_k=args.top_k,
                       clamp=None if args.no_clamp else tuple(args.clamp), cot_max_tokens=args.cot_max_tokens,
                       seed=seed, batch_pairs=args.batch_pairs)


def _sample_config(args):
    check_sampling_flags(args)
    return flag_errors(lambda: _sample_config_unchecked(args))


def _sample_config_unchecked(args):
    return SampleConfig(n=args.n, temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens,
                        pairing=args.pairing, pairs_per_prompt=args.pairs_per_prompt, seed=args.seed,
                        system=args.system)


def _prompts(args) -> str:
    return args.prompts or DEFAULT_PROMPTS


def register(sub: argparse._SubParsersAction) -> None:

    p = sub.add_parser("sample", help="K policy responses per prompt, paired; writes `samples` and `pairs`")
    _sample_flags(p)
    p.add_argument("--out", default=None, help="output dataset dir (required unless the config names it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    add_engine_args(p)
    add_config_args(p)
    p.set_defaults(func=_cmd_sample, parser=p)

    p = sub.add_parser("label", help="AI preference labels for pairs; writes `prefs`")
    p.add_argument("--data", default=None, help="pairs: a `cai sample` dataset dir or a table with "
                   "prompt, response_a, response_b (required unless the config names it)")
    p.add_argument("--out", default=None, help="output dataset dir (required unless the config names it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    add_label_flags(p)
    add_engine_args(p, model_flag="--judge")
    add_config_args(p)
    p.set_defaults(func=_cmd_label, parser=p)

    p = sub.add_parser("rlaif", help="sample from a policy and label with a judge, in one dataset")
    _sample_flags(p)
    add_label_flags(p)
    p.add_argument("--out", default=None, help="output dataset dir (required unless the config names it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    add_engine_args(p)  # --model: the policy
    p.add_argument("--judge", default=None, help="judge model (default: the policy model)")
    add_config_args(p)
    p.set_defaults(func=_cmd_rlaif, parser=p)


# flag dest -> field of `SampleStage`, for `--config` runs
SAMPLE_SHORTCUTS = {"prompts": "prompts", "column": "column", "n": "n", "temperature": "temperature",
                    "top_p": "top_p", "max_tokens": "max_tokens", "pairing": "pairing",
                    "pairs_per_prompt": "pairs_per_prompt", "system": "system", "limit": "limit", "out": "out",
                    "seed": "seed", "model": "model", **ENGINE_SHORTCUTS}


def _cmd_sample(args) -> int:
    if uses_config(args):
        stage = config_run(args, lambda a: stage_config_from_args(SampleStage, a.parser, a, SAMPLE_SHORTCUTS))
        if stage is None:
            return 0
        sample(prompts=stage.prompts, out=stage.out, config=core(SampleConfig, stage), column=stage.column,
               limit=stage.limit or None, overwrite=args.overwrite, engine=engine_config(stage.model, stage.engine))
        return 0
    if not args.out:
        raise InputError("the following arguments are required: --out", field="--out")
    sample(prompts=_prompts(args), out=args.out, config=_sample_config(args), column=args.column, limit=args.limit,
           overwrite=args.overwrite, engine=engine_config_from_args(args))
    return 0


# flag dest -> field of `LabelStage`, for `--config` runs (the switches --cot, --one-order, --no-few-shot and
# --no-clamp are applied after, in `label_stage_config`)
LABEL_SHORTCUTS = {"data": "data", "out": "out", "seed": "seed", "model": "judge", "constitution": "constitution",
                   "principles": "principles", "top_k": "top_k", "cot_max_tokens": "cot_max_tokens",
                   "batch_pairs": "batch_pairs", "clamp": "clamp", **ENGINE_SHORTCUTS}


def label_stage_config(args) -> LabelStage:
    """`--config FILE.yaml` + the flags given + KEY=VALUE overrides -> the `cai label` stage config."""
    cfg = stage_config_from_args(LabelStage, args.parser, args, LABEL_SHORTCUTS)
    changes = label_switches(args)
    return flag_errors(lambda: dataclasses.replace(cfg, **changes)) if changes else cfg


def label_switches(args) -> dict:
    """The LabelConfig fields the on/off flags set when given: --cot, --one-order, --no-few-shot, --no-clamp."""
    switches = {"mode": "cot" if args.cot else None, "both_orders": False if args.one_order else None,
                "few_shot": False if args.no_few_shot else None}
    changes = {k: v for k, v in switches.items() if v is not None}
    if args.no_clamp:
        changes["clamp"] = None
    return changes


def _cmd_label(args) -> int:
    if uses_config(args):
        stage = config_run(args, label_stage_config)
        if stage is None:
            return 0
        label(data=stage.data, out=stage.out, constitution=stage.constitution, config=core(LabelConfig, stage),
              overwrite=args.overwrite, engine=engine_config(stage.judge, stage.engine))
        return 0
    for flag in ("data", "out"):
        if not getattr(args, flag):
            raise InputError(f"the following arguments are required: --{flag}", field=f"--{flag}")
    label(data=args.data, out=args.out, constitution=args.constitution, config=label_config_from_args(args, args.seed),
          overwrite=args.overwrite, engine=engine_config_from_args(args))
    return 0


# flag dest -> field of `RlaifStage` (sampling and labelling flags: its `sample` and `label` sections)
RLAIF_SHORTCUTS = {"prompts": "prompts", "column": "column", "limit": "limit", "out": "out", "model": "model",
                   "judge": "judge", "constitution": "constitution", "seed": "sample.seed",
                   **{k: f"sample.{v}" for k, v in SAMPLE_SHORTCUTS.items()
                      if k in ("n", "temperature", "top_p", "max_tokens", "pairing", "pairs_per_prompt", "system")},
                   **{k: f"label.{v}" for k, v in LABEL_SHORTCUTS.items()
                      if k in ("principles", "top_k", "cot_max_tokens", "batch_pairs", "clamp")},
                   # the engine flags describe the judge's engine too, as they do without --config
                   **{k: (v, v.replace("engine.", "judge_engine.")) for k, v in ENGINE_SHORTCUTS.items()}}


def rlaif_stage_config(args) -> RlaifStage:
    """`--config FILE.yaml` + the flags given + KEY=VALUE overrides -> the `cai rlaif` stage config."""
    if args.seed != args.parser.get_default("seed"):  # one --seed seeds both halves, as without --config
        args.overrides = [f"label.seed={args.seed}", *args.overrides]
    cfg = stage_config_from_args(RlaifStage, args.parser, args, RLAIF_SHORTCUTS)
    changes = label_switches(args)
    if changes:
        cfg = dataclasses.replace(cfg, label=flag_errors(lambda: dataclasses.replace(cfg.label, **changes)))
    return cfg


def _cmd_rlaif(args) -> int:
    if uses_config(args):
        stage = config_run(args, rlaif_stage_config)
        if stage is None:
            return 0
        policy = engine_config(stage.model, stage.engine)
        judge = engine_config(stage.judge or stage.model, stage.judge_engine if stage.judge else stage.engine)
        rlaif(prompts=stage.prompts, out=stage.out, constitution=stage.constitution, sample_config=stage.sample,
              label_config=stage.label, column=stage.column, limit=stage.limit or None, overwrite=args.overwrite,
              policy=policy, judge=judge)
        return 0
    if not args.out:
        raise InputError("the following arguments are required: --out", field="--out")
    policy = engine_config_from_args(args)
    rlaif(prompts=_prompts(args), out=args.out, constitution=args.constitution,
          sample_config=_sample_config(args), label_config=label_config_from_args(args, args.seed), column=args.column,
          limit=args.limit, overwrite=args.overwrite, policy=policy,
          judge=policy.replace(model=args.judge or args.model))
    return 0
