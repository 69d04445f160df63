"""Checkpoints and the final save: `OUTPUT/checkpoints/step-N/` through accelerate, the resume check, and
the durable publication of the trained model into OUTPUT (config.json last)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from torch import nn

from cai.data.store import fsync_dir
from cai.engine.weight_sync import policy_weights
from cai.errors import InputError
from cai.train.distributed import full_state_dict, part


class Checkpoints:
    """`OUTPUT/checkpoints/step-N/`: model (or adapter), optimizer, scheduler and per-process RNG states
    through accelerate (works for DDP, FSDP and DeepSpeed), plus `state.json` with the data position.
    Written to a temporary directory and renamed, so a kill -9 never leaves a half checkpoint."""

    def __init__(self, acc, output_dir: str | Path, keep: int):
        self.acc, self.root, self.keep = acc, Path(output_dir) / "checkpoints", keep

    def latest(self) -> Path | None:
        done = [p for p in self.root.glob("step-*") if (p / "state.json").is_file()]
        return max(done, key=lambda p: int(p.name.split("-")[1])) if done else None

    def save(self, step: int, state: dict) -> None:
        acc = self.acc
        final = self.root / f"step-{step}"
        tmp = self.root / f".tmp-step-{step}"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp), safe_serialization=False)
        acc.wait_for_everyone()
        if acc.is_main_process:
            (tmp / "state.json").write_text(json.dumps({"step": step, **state}, indent=2))
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            for old in sorted((p for p in self.root.glob("step-*") if p != final),
                              key=lambda p: int(p.name.split("-")[1]))[: -(self.keep - 1) or None]:
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()

    def load(self) -> dict:
        """Restore the latest checkpoint into the prepared objects; returns its state (step = next step)."""
        ckpt = self.latest()
        if ckpt is None:
            raise InputError("no checkpoint to resume from", file=self.root, field="--resume")
        self.acc.load_state(str(ckpt))
        return json.loads((ckpt / "state.json").read_text())


def check_resume(output_dir: str | Path, resume: bool) -> None:
    """Fail fast, before loading anything, when --resume has no checkpoint to continue from."""
    root = Path(output_dir) / "checkpoints"
    if resume and not any((p / "state.json").is_file() for p in root.glob("step-*")):
        raise InputError("no checkpoint to resume from", file=root, field="--resume")


def save_output(acc, module: nn.Module, tok, output_dir: str | Path, merge_lora: bool, model_attr: str = "model",
                extra=None) -> Path:
    """`save_pretrained` the trained model, `getattr(unwrapped module, model_attr)` (LoRA: the adapter in
    OUTPUT/adapter and, when merge_lora, the merged weights in OUTPUT) and the tokenizer, so transformers
    and vLLM load OUTPUT directly. The weights are the prepared module's full state dict, gathered from
    the processes' shards under FSDP and ZeRO-3 (the model object itself holds only this process's shard).

    Everything is written to `OUTPUT/.tmp-final` first (`extra(tmp)` may add or edit files there), fsynced,
    then moved into OUTPUT with `config.json` last and any old `config.json` removed first: a kill at any
    moment leaves either the previous model, or no loadable model, never a half-written one that loads."""
    from peft import PeftModel
    out = Path(output_dir)
    acc.wait_for_everyone()
    model = getattr(acc.unwrap_model(module), model_attr)
    state = part(full_state_dict(acc, module, everywhere=False), model_attr + ".")  # {} off the main process
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / ".tmp-final"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        if isinstance(model, PeftModel):
            model.save_pretrained(tmp / "adapter", state_dict=state)
            if merge_lora:
                merged = dict(policy_weights(model, state))
                model.get_base_model().save_pretrained(tmp, state_dict=merged, safe_serialization=True)
        else:
            model.save_pretrained(tmp, state_dict=state, safe_serialization=True)
        tok.save_pretrained(tmp)
        if extra is not None:
            extra(tmp)
        publish(tmp, out)
    acc.wait_for_everyone()
    return out


def publish(tmp: Path, out: Path) -> None:
    """Move the files of `tmp` into `out` durably, `config.json` last (it is what makes a directory load)."""
    files = sorted(p for p in tmp.rglob("*") if p.is_file())
    for f in files:
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    for d in {f.parent for f in files}:
        fsync_dir(d)
    (out / "config.json").unlink(missing_ok=True)
    fsync_dir(out)
    for f in sorted(files, key=lambda f: f == tmp / "config.json"):
        dest = out / f.relative_to(tmp)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(f, dest)
        if f == tmp / "config.json":
            fsync_dir(out)
    shutil.rmtree(tmp, ignore_errors=True)
    fsync_dir(out)

