"""CLI of `cai contrast` (RLCD pairs). Import-light: flags become a `ContrastConfig`."""
from __future__ import annotations

import argparse

from cai.contrast.config import ContrastConfig
from cai.contrast.run import contrast
from cai.stage import engine_spec_from_args


def register(sub: argparse._SubParsersAction) -> None:
    d = ContrastConfig()
    p = sub.add_parser("contrast", help="RLCD: answer each prompt under a positive and a negative framing; "
                       "writes `prefs` (chosen = positive), `sft` and `pairs`")
    p.add_argument("--constitution", default=d.constitution, help="name or path (default: harmless)")
    p.add_argument("--prompts", default=d.prompts, help="prompts framed by the principles (default: red team)")
    p.add_argument("--benign", default=d.benign, help="benign prompts (helpful answer vs needless refusal); "
                   "'' to skip (default: data/helpful.jsonl)")
    p.add_argument("--out", required=True)
    p.add_argument("--model", default=d.model, help="the policy (default smollm2-135m)")
    p.add_argument("--column", default=d.column)
    p.add_argument("--limit", type=int, default=d.limit, help="first N principle-framed prompts (0 = all)")
    p.add_argument("--benign-limit", type=int, default=d.benign_limit, help="first N benign prompts (0 = all)")
    p.add_argument("--temperature", type=float, default=d.temperature)
    p.add_argument("--top-p", type=float, default=d.top_p)
    p.add_argument("--max-tokens", type=int, default=d.max_tokens)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--max-similarity", type=float, default=d.max_similarity,
                   help="drop pairs at least this similar (word-level ratio; default 0.9)")
    p.add_argument("--keep-benign-refusals", action="store_true", help="do not drop benign pairs whose "
                   "positive answer is a refusal")
    p.add_argument("--engine", choices=["vllm", "hf"], default=None, help="vllm (default when installed) or hf")
    p.add_argument("--max-model-len", type=int, default=None, help=f"(default {d.engine.max_model_len})")
    p.add_argument("--engine-arg", action="append", default=None, metavar="KEY=VALUE",
                   help="extra engine argument (JSON value), e.g. kv_cache_memory_bytes=536870912")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd)


def _cmd(a) -> int:
    contrast(ContrastConfig(model=a.model, constitution=a.constitution, prompts=a.prompts, benign=a.benign,
                            out=a.out, column=a.column, limit=a.limit, benign_limit=a.benign_limit,
                            temperature=a.temperature, top_p=a.top_p,
                            max_tokens=a.max_tokens, seed=a.seed, max_similarity=a.max_similarity,
                            drop_benign_refusals=not a.keep_benign_refusals,
                            engine=engine_spec_from_args(a, ContrastConfig().engine), overwrite=a.overwrite))
    return 0
