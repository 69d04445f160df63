"""Processes: starting N of them (`cai train STAGE --nproc N [--fsdp]`), the `Accelerator` each one runs,
what they ran as, and the full weights of a model that is sharded over them.

accelerate 1.16's `accelerate launch --cpu` (and a `use_cpu: true` config) starts ONE process whatever
`--num_processes` says (its simple launcher expects mpirun to start the others), and it never applies an
FSDP config on CPU. So `--nproc` runs torchrun itself (`torch.distributed.run --standalone`, a free port)
with `ACCELERATE_USE_CPU=true` where there is no GPU, which gives `MULTI_CPU` (gloo) DDP; `--fsdp` asks
for FSDP2 (`torch.distributed.fsdp.fully_shard`), which accelerate only enables on accelerators, so on CPU
`make_accelerator` switches the process state to FSDP itself before anything is prepared.
"""
from __future__ import annotations

import os
import sys

import torch
from torch import nn

from cai.config import config_error
from cai.errors import InputError

FSDP_ENV = {  # accelerate's FullyShardedDataParallelPlugin reads these (its `accelerate config` names)
    "ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
    "FSDP_STATE_DICT_TYPE": "FULL_STATE_DICT", "FSDP_RESHARD_AFTER_FORWARD": "true"}


def launch_command(nproc: int, fsdp: bool, argv: list[str], cuda: bool) -> tuple[list[str], dict[str, str]]:
    """The torchrun command and environment that run `cai <argv>` in `nproc` processes on this machine."""
    env = dict(os.environ)
    if not cuda:
        env["ACCELERATE_USE_CPU"] = "true"
        # share the cores instead of oversubscribing them (torch would start one thread per core in each)
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    if fsdp:
        env.update(FSDP_ENV)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "cai.cli", *argv]
    return cmd, env


def launch(nproc: int, fsdp: bool, argv: list[str]) -> None:
    """Replace this process with torchrun running `cai <argv>` in `nproc` processes (never returns)."""
    cuda = torch.cuda.is_available()
    if cuda and nproc > torch.cuda.device_count():  # one process per GPU
        raise InputError(f"{nproc} processes for {torch.cuda.device_count()} GPUs", field="--nproc")
    cmd, env = launch_command(nproc, fsdp, argv, cuda)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(cmd[0], cmd, env)


def make_accelerator(seed: int):
    """One `Accelerator` per run; the launcher (`--nproc`, `accelerate launch`, torchrun) decides the
    process count and DDP/FSDP/DeepSpeed."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin, set_seed
    from transformers.utils import logging as hf_logging
    precision = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")  # `accelerate launch --mixed_precision`
    if AcceleratorState._shared_state.get("_mixed_precision", precision) != precision:
        # Another trainer in this process (TRL defaults to bf16 on CPU) left a process-wide mixed-precision
        # state behind; start from a clean state instead of silently inheriting its autocast.
        AcceleratorState._reset_state()
    acc = Accelerator(mixed_precision=precision)
    if acc.distributed_type == DistributedType.MULTI_CPU and os.environ.get("ACCELERATE_USE_FSDP") == "true":
        # accelerate enables FSDP only on accelerators; its FSDP2 path itself (fully_shard, DCP checkpoints,
        # full state dicts) runs on gloo. Both shared states hold the type: AcceleratorState is rebuilt from
        # PartialState's dict whenever accelerate constructs one internally.
        for shared in (PartialState._shared_state, AcceleratorState._shared_state):
            shared["distributed_type"] = DistributedType.FSDP
        AcceleratorState._shared_state["fsdp_plugin"] = FullyShardedDataParallelPlugin()
    set_seed(seed)
    hf_logging.disable_progress_bar()  # "Loading weights" bars: our own bar is the one to watch
    if not acc.is_main_process:
        hf_logging.set_verbosity_error()
    return acc


def check_fsdp(cfg, stage: str) -> None:
    """Refuse what FSDP cannot run: PPO/RLOO's LoRA reference is the policy with its adapter disabled,
    called outside the sharded module, where its parameters are still shards."""
    if stage in ("ppo", "rloo") and cfg.lora.enabled and not cfg.ref_model:
        raise config_error(cfg, "ref_model", "FSDP cannot use the adapter-disabled policy as the reference; "
                           "set ref_model (the base model) or train without --fsdp")
    if getattr(getattr(cfg, "run", None), "tokens_per_batch", 0):
        # every sharded layer's forward is a collective all processes must join, and token-budget micro-batches
        # differ in number from one process to the next (packing.token_micro_batches)
        raise config_error(cfg, "run.tokens_per_batch", "FSDP needs the same number of forwards on every process, "
                           "and packed micro-batches differ per process; set run.tokens_per_batch: 0 or train "
                           "without --fsdp")


def wrap_layers(acc, module: nn.Module) -> None:
    """Under FSDP, shard each transformer block as its own unit (its weights are gathered only while it
    runs): the classes are those the models inside `module` name as `_no_split_modules` (the trainers'
    wrappers have none of their own), unless the launcher named them. Every call of a sharded layer is
    an all-gather that all processes must join, so the forwards stop splitting a micro-batch into length
    buckets (their number depends on this process's rows)."""
    from accelerate.utils import DistributedType
    if acc.distributed_type != DistributedType.FSDP:
        return
    for m in module.modules():
        if hasattr(m, "bucketed"):
            m.bucketed = False
    plugin = acc.state.fsdp_plugin
    if plugin.transformer_cls_names_to_wrap:
        return
    present = {type(m).__name__ for m in module.modules()}
    names = sorted({n for m in module.modules() for n in (getattr(m, "_no_split_modules", None) or [])
                    if n in present})
    plugin.transformer_cls_names_to_wrap = names or None


def describe(acc, module: nn.Module) -> dict:
    """What the run ran as: process count, accelerate's distributed type, the backend, and how many of the
    module's parameters each process holds (a sharded run: about total / processes each)."""
    local = sum(_local(p).numel() for p in module.parameters())
    total = sum(getattr(p, "ds_numel", p.numel()) for p in module.parameters())  # DTensor.numel: full size
    held = [local]
    if acc.num_processes > 1:
        from accelerate.utils import gather_object
        held = gather_object([local])
    return {"processes": acc.num_processes, "distributed_type": str(acc.distributed_type.value),
            "backend": acc.state.backend, "params": total, "params_per_process": held}


def _local(p: torch.Tensor) -> torch.Tensor:
    """This process's part of a parameter: a DTensor's local shard (FSDP2), ZeRO-3's partition."""
    if hasattr(p, "ds_tensor"):
        return p.ds_tensor
    return p.to_local() if hasattr(p, "to_local") else p


def full_state_dict(acc, module: nn.Module, *, everywhere: bool) -> dict[str, torch.Tensor]:
    """The full (unsharded) state dict of a prepared module, keyed as the unwrapped module's
    `state_dict()`. `everywhere`: every process gets it (each process's rollout engine needs the weights);
    else only the main process does (saving), the others get {}.

    A sharded module's own `state_dict()` holds shards (FSDP2: DTensors; ZeRO-3: empty placeholders),
    so reading it directly would hand an engine or a checkpoint partitioned tensors."""
    from accelerate.utils import DistributedType
    if acc.distributed_type == DistributedType.FSDP:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
        # cpu_offload keeps the gathered copy on rank 0 only; without it every rank all-gathers each tensor
        opts = StateDictOptions(full_state_dict=True, cpu_offload=not everywhere)
        state = get_model_state_dict(module, options=opts)
        return _tie(module, state) if everywhere or acc.is_main_process else {}
    if acc.distributed_type == DistributedType.DEEPSPEED and everywhere:
        import deepspeed  # ZeRO-3: gather the partitions on every rank for the duration of the copy
        with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
            return {k: v.detach().clone() for k, v in acc.unwrap_model(module).state_dict().items()}
    if everywhere:
        return acc.unwrap_model(module).state_dict()
    state = acc.get_state_dict(module)  # DeepSpeed ZeRO-3: the 16-bit weights consolidated on rank 0
    return state if acc.is_main_process else {}


def _tie(module: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Names of one shared parameter (tied input and output embeddings) point at one gathered tensor, as in
    `state_dict()`, so `save_pretrained` writes it once (the gather makes a separate copy per name)."""
    first: dict[int, str] = {}
    for name, p in module.named_parameters(remove_duplicate=False):
        if name in state:
            state[name] = state[first.setdefault(id(p), name)]
    return state


def part(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries under `prefix` (`"policy."` of PPO's policy-and-value module), prefix removed."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
