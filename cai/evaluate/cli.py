"""CLI of `cai eval values`. Import-light: flags become a `ValuesConfig`."""
from __future__ import annotations

import argparse

from cai.evaluate.config import DEFAULT_BENIGN, DEFAULT_HARMFUL, ValuesConfig


def register(sub: argparse._SubParsersAction) -> None:
    # `cai eval` may already exist (cai.feedback.cli registers `eval judge`): reuse its sub-parsers.
    ev = sub.choices.get("eval")
    if ev is None:
        ev = sub.add_parser("eval", help="evaluate models and judges")
        ev._cai_sub = ev.add_subparsers(dest="eval_command", metavar="WHAT", parser_class=type(ev))
    p = ev._cai_sub.add_parser("values", help="refusal, over-refusal, judge preference and length of a model "
                               "against a baseline on held-out prompts, with bootstrap intervals")
    p.add_argument("--model", required=True, help="model to evaluate (alias, HF dir, e.g. runs/sft)")
    p.add_argument("--baseline", default="smollm2-135m", help="model to compare with (default smollm2-135m)")
    p.add_argument("--constitution", default="harmless", help="judge principles and scoring rubric")
    p.add_argument("--harmful", default=DEFAULT_HARMFUL, help="held-out harmful prompts (default data/eval)")
    p.add_argument("--benign", default=DEFAULT_BENIGN, help="held-out benign prompts (default data/eval)")
    p.add_argument("--out", required=True, help="output directory (values.json, values.md, answers.jsonl)")
    p.add_argument("--judge", default="", help="judge model (default: the baseline)")
    p.add_argument("--no-judge", action="store_true", help="skip the judge: detector figures and lengths only")
    p.add_argument("--judge-few-shot", action="store_true", help="show the judge the constitution's few-shot "
                   "comparisons (off: they cut SmolLM2's judge accuracy from 0.875 to 0.458)")
    p.add_argument("--temperature", type=float, default=0.0, help="decoding temperature (default 0: greedy)")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--system", default=None, help="system prompt for both models (default none)")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=0, help="first N prompts of each set")
    p.add_argument("--engine", choices=["vllm", "hf"], default=None)
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--engine-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="extra engine argument (JSON value), e.g. kv_cache_memory_bytes=536870912")
    p.set_defaults(func=_cmd)


def _cmd(a) -> int:
    from cai.evaluate.values import eval_values
    from cai.stage import parse_engine_args
    eval_values(ValuesConfig(model=a.model, baseline=a.baseline, constitution=a.constitution, harmful=a.harmful,
                             benign=a.benign, out=a.out, judge=a.judge, pairwise=not a.no_judge,
                             judge_few_shot=a.judge_few_shot,
                             temperature=a.temperature, max_tokens=a.max_tokens, system=a.system,
                             bootstrap=a.bootstrap, seed=a.seed, limit=a.limit, engine=a.engine,
                             max_model_len=a.max_model_len, engine_args=parse_engine_args(a.engine_arg)))
    return 0
