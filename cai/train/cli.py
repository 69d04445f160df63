"""`cai train sft|rm|dpo|ppo|rloo --config FILE.yaml [key.sub=value ...] [--resume] [--nproc N [--fsdp]]`
and `cai train merge ADAPTER --out DIR`.

Registration imports no torch; the handler loads the config (errors name file:line:col and the field)
and runs the stage's `train`. `--nproc N [--fsdp]` starts N processes through torchrun
(`cai.train.distributed.launch`); under it, or `accelerate launch`, every process runs the same command.
"""
from __future__ import annotations

import argparse
import os

from cai.errors import InputError
from cai.train.config import STAGES, load_config
from cai.train.ppo_config import PPOConfig

HELP = {"sft": "supervised fine-tuning on chat messages (assistant tokens only)",
        "rm": "Bradley-Terry reward model on preference pairs (soft labels)",
        "dpo": "DPO / IPO / cDPO / robust DPO on preference pairs",
        "ppo": "PPO with a per-token KL penalty against a reward model, judge or Python reward function",
        "rloo": "RLOO (K samples per prompt, leave-one-out baseline): PPO's config with algorithm rloo"}
CONFIGS = {**STAGES, "ppo": PPOConfig, "rloo": PPOConfig}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model: sft, rm (reward model), dpo, ppo or rloo")
    tsub = p.add_subparsers(dest="train_stage", metavar="STAGE", required=True)
    for stage in CONFIGS:
        s = tsub.add_parser(stage, help=HELP[stage], description=HELP[stage] + ". Overrides are dotted "
                            "config keys, e.g. optim.lr=1e-5 run.max_steps=10 data.path=out/feedback")
        s.add_argument("--config", help="YAML config (see configs/); defaults apply to absent keys")
        s.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
        s.add_argument("--resume", action="store_true", help="continue from the last checkpoint in run.output_dir")
        s.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
        s.add_argument("--nproc", type=int, default=1, metavar="N",
                       help="run in N processes on this machine (torchrun; gloo DDP on CPU, NCCL on GPUs)")
        s.add_argument("--fsdp", action="store_true",
                       help="with --nproc: shard parameters, gradients and optimizer state (FSDP2)")
        s.set_defaults(func=_handler(stage))
    m = tsub.add_parser("merge", help="merge a LoRA adapter directory into its base and save a plain HF model")
    m.add_argument("adapter", help="adapter directory (e.g. runs/dpo/adapter)")
    m.add_argument("--out", required=True, help="output directory for the merged model and tokenizer")
    m.set_defaults(func=_merge)


def _merge(args) -> int:
    from pathlib import Path

    if not (Path(args.adapter) / "adapter_config.json").is_file():
        raise InputError("not a LoRA adapter directory (no adapter_config.json)", file=args.adapter, field="adapter")
    from cai.train.lora import merge_adapter
    print(merge_adapter(args.adapter, args.out))
    return 0


def _handler(stage: str):
    def run(args) -> int:
        import dataclasses

        import yaml

        cfg = load_config(CONFIGS[stage], args.config, args.overrides)
        if args.print_config:
            print(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False), end="")
            return 0
        if args.nproc < 1:
            raise InputError(f"must be at least 1, not {args.nproc}", field="--nproc")
        if args.fsdp and args.nproc < 2:
            raise InputError("shards over processes: give --nproc 2 or more", field="--fsdp")
        if args.nproc > 1:  # the config is valid: start the processes, each runs this command without --nproc
            from cai.train.distributed import check_fsdp, launch
            if args.fsdp:
                check_fsdp(cfg, stage)
            launch(args.nproc, args.fsdp, ["train", stage, *(["--config", args.config] if args.config else []),
                                           *args.overrides, *(["--resume"] if args.resume else [])])
        import importlib
        out = importlib.import_module(f"cai.train.{stage}").train(cfg, resume=args.resume)
        if os.environ.get("RANK", "0") == "0":  # one line, not one per process
            print(out)
        return 0
    return run
