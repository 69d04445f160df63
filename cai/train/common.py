"""What the trainers share around their loops: processes, model loading, the optimizer, and the set-up and
ending every trainer runs (`setup`, `start_training`, `finish`). The loops themselves live in sft.py,
rm.py, dpo.py and ppo.py; forward passes are in `forward`, checkpoints in `checkpoints`, metrics in `metrics`.
"""
from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cai.errors import InputError
from cai.models import model_hash, resolve_model
from cai.report.plots import plot_metrics
from cai.train.card import write_card
from cai.train.checkpoints import Checkpoints, check_resume, save_output
from cai.train.distributed import describe, make_accelerator, wrap_layers  # noqa: F401 (make_accelerator)
from cai.train.lora import check_targets
from cai.train.metrics import Metrics

# ---- processes ------------------------------------------------------------------------------------------


def reduce_sum(acc, value: torch.Tensor | float) -> torch.Tensor:
    """Sum a scalar (or tensor) over processes."""
    t = value.detach().clone() if isinstance(value, torch.Tensor) else torch.tensor(float(value))
    t = t.to(acc.device, torch.float64 if t.is_floating_point() else t.dtype)
    return acc.reduce(t, reduction="sum") if acc.num_processes > 1 else t


def accumulate(sums: dict, out: dict[str, torch.Tensor]) -> None:
    """Add a micro-batch's per-pair metric tensors into running sums (float64, detached)."""
    for k, v in out.items():
        sums[k] = sums.get(k, 0.0) + v.detach().double().sum()


def total_steps(n_train: int, run) -> int:
    if n_train < run.batch_size:
        raise InputError(f"only {n_train} training rows for batch_size {run.batch_size}", field="run.batch_size")
    if run.max_steps:
        return run.max_steps
    return max(1, math.floor(run.epochs * (n_train // run.batch_size)))


def step_delay() -> None:
    """Testing hook: `CAI_TRAIN_STEP_DELAY=seconds` slows each step so a test can kill a run mid-way."""
    d = float(os.environ.get("CAI_TRAIN_STEP_DELAY", "0") or 0)
    if d > 0:
        time.sleep(d)


# ---- models ---------------------------------------------------------------------------------------------


def resolve(name: str, field: str) -> Path:
    try:
        return resolve_model(name)
    except InputError as e:
        raise InputError(e.message, file=e.file, line=e.line, col=e.col, field=field) from None


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if not getattr(tok, "chat_template", None):
        raise InputError("the tokenizer has no chat template", file=path, field="model")
    return tok


def disable_dropout(model: nn.Module) -> None:
    """Dropout off in policy, reference and reward model (METHOD.md: deterministic log-probs)."""
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    cfg = getattr(model, "config", None)
    for name in ("attention_dropout", "hidden_dropout", "dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop"):
        if cfg is not None and isinstance(getattr(cfg, name, None), float):
            setattr(cfg, name, 0.0)


def load_causal_lm(path: Path, dtype: str, gradient_checkpointing: bool = False):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    disable_dropout(model)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
    model.config.use_cache = False
    return model


# ---- optimisation ---------------------------------------------------------------------------------------


def make_optimizer(model: nn.Module, optim) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=optim.lr, betas=tuple(optim.betas), eps=optim.eps,
                             weight_decay=optim.weight_decay)


def make_scheduler(opt, optim, steps: int):
    from transformers import get_scheduler
    name = {"constant": "constant_with_warmup"}.get(optim.scheduler, optim.scheduler)
    return get_scheduler(name, opt, num_warmup_steps=optim.warmup_steps, num_training_steps=steps)


def optimizer_step(acc, model, opt, sched, max_grad_norm: float) -> float:
    """Clip, step, schedule, zero. Returns the pre-clip gradient norm."""
    norm = acc.clip_grad_norm_(model.parameters(), max_grad_norm if max_grad_norm > 0 else float("inf"))
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return float(norm)


# ---- the set-up and the ending every trainer runs --------------------------------------------------------


@dataclass
class Setup:
    """What a trainer has before any weights load: the resolved model, the processes and the tokenizer."""

    model_path: Path
    acc: Any  # accelerate.Accelerator
    tok: Any  # transformers tokenizer, with a pad token and a chat template


def setup(cfg, resume: bool, lora_task: str = "CAUSAL_LM") -> Setup:
    """Resolve the model, fail fast on a `--resume` with nothing to resume, start the processes (seeded), load
    the tokenizer and check LoRA's target modules: every mistake here surfaces before a weight is read."""
    model_path = resolve(cfg.model, "model")
    check_resume(cfg.run.output_dir, resume)
    acc = make_accelerator(cfg.run.seed)
    tok = load_tokenizer(model_path)
    check_targets(cfg, model_path, lora_task)
    return Setup(model_path, acc, tok)


@dataclass
class Training:
    """The prepared module and optimizer, the schedule, checkpoints and metrics of one run."""

    module: nn.Module  # wrapped by accelerate (DDP/FSDP)
    opt: torch.optim.Optimizer
    sched: Any
    ckpt: Checkpoints
    metrics: Metrics
    steps: int
    state: dict  # the resumed checkpoint's state.json (`step`: the next step), or {"step": 0}

    @property
    def start(self) -> int:
        return self.state["step"]


def start_training(acc, module: nn.Module, cfg, n_train: int, resume: bool, desc: str,
                   updates_per_step: int = 1) -> Training:
    """Optimizer, schedule (`updates_per_step` optimizer steps per training step: PPO's epochs × minibatches),
    accelerate's wrapping, the resumed checkpoint when `resume`, and the metrics log from that step on."""
    steps = total_steps(n_train, cfg.run)
    opt = make_optimizer(module, cfg.optim)
    sched = make_scheduler(opt, cfg.optim, steps * updates_per_step)
    wrap_layers(acc, module)
    module, opt = acc.prepare(module, opt)
    if acc.num_processes > 1 and acc.is_main_process:
        print(f"cai train {desc}: {acc.num_processes} processes, {acc.distributed_type.value} "
              f"({acc.state.backend})", file=sys.stderr)
    acc.register_for_checkpointing(sched)
    ckpt = Checkpoints(acc, cfg.run.output_dir, cfg.run.keep_checkpoints)
    state = ckpt.load() if resume else {"step": 0}
    metrics = Metrics(acc, cfg.run.output_dir, steps, state["step"], cfg.run.progress, desc)
    return Training(module, opt, sched, ckpt, metrics, steps, state)


def finish(acc, module: nn.Module, tok, cfg, stage: str, model_path: Path, *, provenance: dict, counts: dict,
           final: dict, details: dict, plot_keys: list[str], plot_title: str, model_attr: str = "model",
           extra: Callable[[Path], None] | None = None) -> Path:
    """Save the model (`model_attr` of the prepared module: PPO's `policy`, not its value model) durably
    (`extra(tmp)` adds files beside it), then the model card (with what the processes ran as) and the
    training plot on the main process; every process returns OUTPUT once all are done."""
    processes = describe(acc, module)
    out_dir = save_output(acc, module, tok, cfg.run.output_dir, cfg.lora.merge, model_attr, extra=extra)
    if acc.is_main_process:
        write_card(out_dir, stage, asdict(cfg), cfg.model, provenance, counts, final,
                   {**details, "processes": processes},
                   base_hash=model_hash(model_path))
        plot_metrics(out_dir, plot_keys, plot_title)
    acc.wait_for_everyone()
    return out_dir
