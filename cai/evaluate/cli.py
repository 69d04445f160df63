"""`cai eval`: the one command group for evaluations. `judge` (a judge's accuracy on labelled pairs),
`values` (a model against a baseline on held-out prompts) and `agreement` (AI vs human labels).

Flags become each evaluation's config; the evaluations themselves are library functions in this package
and in `cai.feedback.evaluate`.
"""
from __future__ import annotations

import argparse
from functools import partial

from cai.config import field_default
from cai.evaluate.agreement import AgreementConfig, eval_agreement
from cai.evaluate.config import ValuesConfig
from cai.evaluate.stats import RATE_INTERVALS
from cai.evaluate.values import eval_values
from cai.feedback.cli import LABEL_FLAGS, LABEL_SWITCHES, add_label_flags
from cai.feedback.config import EvalJudgeStage
from cai.feedback.evaluate import run_eval_judge
from cai.stage import add_config_args, add_engine_args, config_run, engine_spec_from_args, stage_config_from_args


def register(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("eval", help="evaluate models and judges")
    esub = ev.add_subparsers(dest="eval_command", metavar="WHAT", parser_class=type(ev))
    _register_judge(esub)
    _register_values(esub)
    _register_agreement(esub)


# --- judge ---------------------------------------------------------------------------------------

def _register_judge(esub) -> None:
    p = esub.add_parser("judge", help="judge accuracy, log-likelihood and calibration on labelled pairs")
    p.add_argument("--data", default=None, help="JSONL {prompt, response_a, response_b, label: A|B} "
                   "(required unless the config names it)")
    p.add_argument("--out", default=None, help="report JSON (top-level `accuracy`)")
    p.add_argument("--seed", type=int, default=None, help=f"(default {EvalJudgeStage.seed})")
    add_label_flags(p)
    add_engine_args(p, model_flag="--judge", default_model=EvalJudgeStage.judge)
    add_config_args(p)
    p.set_defaults(func=_cmd_judge)


def judge_stage_config(args) -> EvalJudgeStage:
    """Defaults <- `--config FILE.yaml` <- the flags given <- KEY=VALUE overrides (the labelling flags are
    `cai label`'s)."""
    flags = {"data": "data", "out": "out", "seed": "seed", "model": "judge", "constitution": "constitution",
             **LABEL_FLAGS}
    return stage_config_from_args(EvalJudgeStage, args, flags, switches=LABEL_SWITCHES)


def _cmd_judge(args) -> int:
    stage = config_run(args, judge_stage_config, needs_out=False)
    if stage is not None:
        run_eval_judge(stage)
    return 0


# --- values --------------------------------------------------------------------------------------

def _register_values(esub) -> None:
    d = partial(field_default, ValuesConfig)  # every default is ValuesConfig's (it needs a model to be built)
    p = esub.add_parser("values", help="refusal, over-refusal, non-answers, judge preference, length, "
                        "template_share and the constitution's checks of a model against a baseline on held-out "
                        "prompts, with intervals")
    p.add_argument("--model", required=True, help="model to evaluate (alias, HF dir, e.g. runs/sft)")
    p.add_argument("--baseline", default=d("baseline"), help=f"model to compare with (default {d('baseline')})")
    p.add_argument("--constitution", default=d("constitution"), help="judge principles and scoring rubric")
    p.add_argument("--harmful", default=d("harmful"), help="held-out harmful prompts (default data/eval)")
    p.add_argument("--benign", default=d("benign"), help="held-out benign prompts (default data/eval)")
    p.add_argument("--out", required=True, help="output directory (values.json, values.md, answers.jsonl)")
    p.add_argument("--judge", default=d("judge"), help="judge model (default: the baseline)")
    p.add_argument("--no-judge", action="store_true", help="skip the judge: detector figures and lengths only")
    p.add_argument("--judge-few-shot", action="store_true", help="show the judge the constitution's few-shot "
                   "comparisons (off by default; measured in docs/judges.md)")
    p.add_argument("--temperature", type=float, default=d("temperature"),
                   help=f"decoding temperature (default {d('temperature')}: greedy)")
    p.add_argument("--max-tokens", type=int, default=d("max_tokens"))
    p.add_argument("--system", default=d("system"), help="system prompt for both models (default none)")
    p.add_argument("--interval", choices=list(RATE_INTERVALS), default=d("interval"),
                   help=f"interval of every rate (default {d('interval')})")
    p.add_argument("--bootstrap", type=int, default=d("bootstrap"), help="resamples for means and their deltas")
    p.add_argument("--seed", type=int, default=d("seed"))
    p.add_argument("--limit", type=int, default=d("limit"), help="first N prompts of each set")
    p.add_argument("--engine", choices=["vllm", "hf"], default=None, help="vllm (default when installed) or hf")
    p.add_argument("--max-model-len", type=int, default=None, help=f"(default {d('engine').max_model_len})")
    p.add_argument("--engine-arg", action="append", default=None, metavar="KEY=VALUE",
                   help="extra engine argument (JSON value), e.g. kv_cache_memory_bytes=536870912")
    p.set_defaults(func=_cmd_values)


def _cmd_values(a) -> int:
    eval_values(ValuesConfig(model=a.model, baseline=a.baseline, constitution=a.constitution, harmful=a.harmful,
                             benign=a.benign, out=a.out, judge=a.judge, pairwise=not a.no_judge,
                             judge_few_shot=a.judge_few_shot,
                             temperature=a.temperature, max_tokens=a.max_tokens, system=a.system,
                             interval=a.interval, bootstrap=a.bootstrap, seed=a.seed, limit=a.limit,
                             engine=engine_spec_from_args(a, field_default(ValuesConfig, "engine"))))
    return 0


# --- agreement -----------------------------------------------------------------------------------

def _register_agreement(esub) -> None:
    a = esub.add_parser("agreement", help="AI vs human labels: accuracy, Cohen's kappa, calibration")
    a.add_argument("--data", required=True, help="the labelled dataset dir")
    a.add_argument("--db", default="", help="label store (default DATA/human_labels.sqlite)")
    a.add_argument("--out", default="", help="output dir for agreement.json and calibration.png "
                   "(default DATA/agreement)")
    a.add_argument("--bins", type=int, default=5, help="calibration bins over p_chosen in [0.5, 1]")
    a.set_defaults(func=_cmd_agreement)


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def _cmd_agreement(args) -> int:
    cfg = AgreementConfig(data=args.data, db=args.db, out=args.out, bins=args.bins)
    r = eval_agreement(cfg)
    rows = [("overall", r["overall"])] + list(r["per_principle"].items())
    print(f"{'principle':<28} {'pairs':>6} {'voted':>6} {'acc_n':>6} {'AI acc':>7} {'k(h,AI)':>8} {'k(h,h)':>7}")
    for name, s in rows:
        print(f"{name[:28]:<28} {s['pairs']:>6} {s['human_labelled']:>6} {s['accuracy_n']:>6} "
              f"{_fmt(s['ai_accuracy']):>7} {_fmt(s['kappa_human_ai']):>8} {_fmt(s['kappa_annotators']['mean']):>7}")
    cal = r["overall"]["calibration"]
    print(f"calibration (ECE {_fmt(cal['ece'])}, {cal['n']} pairs): " + ", ".join(
        f"[{b['lo']:.2f},{b['hi']:.2f}) n={b['n']} p={_fmt(b['mean_p'])} human={_fmt(b['human_rate'])}"
        for b in cal["bins"]))
    print(f"wrote {cfg.out}/agreement.json and {cfg.out}/calibration.png")
    return 0
