"""What the three trainers share: processes, models, log-prob and reward forwards, optimizer, checkpoints,
metrics and the final save. The loops themselves live in sft.py, rm.py and dpo.py.

Log-probs are computed by `CompletionLogps`, a thin module around a causal LM that runs the decoder once
and applies the LM head only at the positions whose next token is scored: the vocabulary-sized logits of
prompt and padding positions are never built (for DPO that is most of the memory TRL spends). The module
is what accelerate wraps (DDP/FSDP), so gradient synchronisation sees an ordinary forward.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cai.data.store import fsync_dir
from cai.errors import InputError
from cai.models import resolve_model
from cai.train import losses

# ---- processes ------------------------------------------------------------------------------------------


def make_accelerator(seed: int):
    """One `Accelerator` per run; `accelerate launch` decides DDP/FSDP/DeepSpeed and the process count."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import set_seed
    from transformers.utils import logging as hf_logging
    precision = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")  # `accelerate launch --mixed_precision`
    if AcceleratorState._shared_state.get("_mixed_precision", precision) != precision:
        # Another trainer in this process (TRL defaults to bf16 on CPU) left a process-wide mixed-precision
        # state behind; start from a clean state instead of silently inheriting its autocast.
        AcceleratorState._reset_state()
    acc = Accelerator(mixed_precision=precision)
    set_seed(seed)
    hf_logging.disable_progress_bar()  # "Loading weights" bars: our own bar is the one to watch
    if not acc.is_main_process:
        hf_logging.set_verbosity_error()
    return acc


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


def _inner_model(model: nn.Module) -> nn.Module:
    """The transformers model under a peft wrapper (LoRA layers are injected in place, so they stay active)."""
    from peft import PeftModel
    return model.get_base_model() if isinstance(model, PeftModel) else model


def length_buckets(lengths: list[int], max_waste: float = 0.15) -> list[list[int]]:
    """Row indices grouped by length (ascending) so that padding each group to its longest row wastes at
    most `max_waste` of its real tokens. Rows are independent, so forwarding them in such groups gives the
    same numbers as one padded batch with less compute."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    real = 0
    for i in order:
        n = lengths[i]
        if groups and (len(groups[-1]) + 1) * n <= (1 + max_waste) * (real + n):
            groups[-1].append(i)
            real += n
        else:
            groups.append([i])
            real = n
    return groups


class CompletionLogps(nn.Module):
    """Summed log-probs of the completion tokens of each row, with the LM head applied only where needed.

    forward(input_ids (B, T), attention_mask (B, T) or None, completion_mask (B, T)[, position_ids])
      -> (logps (B,), n_tokens (B,)); token t is scored when completion_mask[t] == 1 (t >= 1).
    Rows are run in length buckets (one module call, so DDP sees one forward). Models with logit
    soft-capping/scaling fall back to the full forward.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, completion_mask, position_ids=None):
        if attention_mask is None:  # packed rows: one group, block-causal attention from position_ids
            groups = [list(range(input_ids.size(0)))]
        else:
            groups = length_buckets(attention_mask.sum(-1).tolist())
        sums = torch.zeros(input_ids.size(0), dtype=torch.float32, device=input_ids.device)
        counts = completion_mask[:, 1:].sum(-1)
        for g in groups:
            rows = torch.tensor(g, device=input_ids.device)
            width = int(attention_mask[rows].sum(-1).max()) if attention_mask is not None else input_ids.size(1)
            parts = [None if t is None else t[rows, :width]
                     for t in (input_ids, attention_mask, completion_mask, position_ids)]
            sums = sums.index_copy(0, rows, self._group(*parts))
        return sums, counts

    def _group(self, input_ids, attention_mask, completion_mask, position_ids) -> torch.Tensor:
        inner = _inner_model(self.model)
        target_mask = completion_mask[:, 1:].bool()  # (b, t-1): position t predicts token t+1
        targets = input_ids[:, 1:][target_mask]  # (N,)
        decoder = inner.get_decoder() if hasattr(inner, "get_decoder") else None
        fused = decoder is not None and getattr(inner.config, "final_logit_softcapping", None) is None \
            and getattr(inner.config, "logit_scale", None) is None
        if fused:
            hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             use_cache=False).last_hidden_state  # (b, t, H)
            logits = inner.get_output_embeddings()(hidden[:, :-1][target_mask])  # (N, V)
        else:
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                use_cache=False).logits[:, :-1][target_mask]  # (N, V)
        tok_logps = losses.token_logps(logits, targets)  # (N,)
        rows = target_mask.nonzero()[:, 0]  # (N,) row of each scored token
        return torch.zeros(input_ids.size(0), dtype=tok_logps.dtype, device=tok_logps.device).index_add(
            0, rows, tok_logps)  # (b,)


class LastTokenReward(nn.Module):
    """Scalar reward of each row, read at its last real token (attention mask, right padding).

    Reading by mask rather than by pad id matters for chat models whose pad token is the end-of-turn
    token. Rows run in length buckets. forward(input_ids (B, T), attention_mask (B, T)) -> (B,) rewards.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        lengths = attention_mask.sum(-1)
        out = torch.zeros(input_ids.size(0), dtype=torch.float32, device=input_ids.device)
        for g in length_buckets(lengths.tolist()):
            rows = torch.tensor(g, device=input_ids.device)
            width = int(lengths[rows].max())
            out = out.index_copy(0, rows, self._group(input_ids[rows, :width], attention_mask[rows, :width]))
        return out

    def _group(self, input_ids, attention_mask):
        inner = _inner_model(self.model)
        base = getattr(inner, inner.base_model_prefix, None)
        head = getattr(inner, "score", None)
        last = attention_mask.sum(-1) - 1  # (b,)
        rows = torch.arange(input_ids.size(0), device=input_ids.device)
        if base is None or head is None:
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
            return (logits.squeeze(-1) if logits.dim() == 2 else logits[rows, last, 0]).float()
        hidden = base(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        return head(hidden[rows, last]).squeeze(-1).float()  # (b,)


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


# ---- checkpoints ----------------------------------------------------------------------------------------


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


def report_data(acc, stage: str, prep) -> None:
    """One line on stderr: rows used, and how many were truncated or dropped at max_length (as in TRL)."""
    if acc.is_main_process:
        import sys
        c = prep.counts
        print(f"cai train {stage}: {len(prep.train)} training and {len(prep.eval)} held-out examples; "
              f"{c.truncated} of {c.rows} training rows over max_length (truncated or dropped as in TRL), "
              f"{c.dropped} dropped", file=sys.stderr)


def check_resume(output_dir: str | Path, resume: bool) -> None:
    """Fail fast, before loading anything, when --resume has no checkpoint to continue from."""
    root = Path(output_dir) / "checkpoints"
    if resume and not any((p / "state.json").is_file() for p in root.glob("step-*")):
        raise InputError("no checkpoint to resume from", file=root, field="--resume")


# ---- metrics --------------------------------------------------------------------------------------------


class Metrics:
    """Every step to `OUTPUT/metrics.jsonl` (and TensorBoard when installed), with a tqdm bar and ETA.
    Only the main process writes. On resume, lines past the resumed step are dropped."""

    def __init__(self, acc, output_dir: str | Path, total: int, start: int, progress: bool, desc: str):
        self.main = acc.is_main_process
        self.path = Path(output_dir) / "metrics.jsonl"
        self.tb = self.bar = None
        if not self.main:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            keep = [ln for ln in self.path.read_text().splitlines()
                    if ln.strip() and json.loads(ln).get("step", 0) <= start]
            self.path.write_text("".join(ln + "\n" for ln in keep))
        self.fh = open(self.path, "a")  # noqa: SIM115 - held for the run, closed in close()
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(Path(output_dir) / "tensorboard"))
        except Exception:  # noqa: BLE001 - tensorboard is optional
            self.tb = None
        if progress:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, initial=start, desc=desc, dynamic_ncols=True)

    def log(self, step: int, values: dict) -> None:
        if not self.main:
            return
        rec = {"step": step, **{k: (round(v, 8) if isinstance(v, float) else v) for k, v in values.items()}}
        self.fh.write(json.dumps(rec) + "\n")
        self.fh.flush()
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, step)
        if self.bar is not None and not k_is_eval(values):
            self.bar.update(1)
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in values.items() if k in ("loss", "accuracy")})

    def close(self) -> None:
        if not self.main:
            return
        self.fh.close()
        if self.tb is not None:
            self.tb.close()
        if self.bar is not None:
            self.bar.close()


def k_is_eval(values: dict) -> bool:
    return any(k.startswith("eval/") for k in values)


def read_metrics(path: str | Path) -> list[dict]:
    return [json.loads(ln) for ln in Path(path).read_text().splitlines() if ln.strip()]


def plot_metrics(output_dir: str | Path, keys: list[str], title: str) -> Path:
    """A PNG of the loss and key metrics against the step (train lines, eval points)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    recs = read_metrics(Path(output_dir) / "metrics.jsonl")
    keys = [k for k in keys if any(k in r or f"eval/{k}" in r for r in recs)]
    fig, axes = plt.subplots(len(keys), 1, figsize=(7, 2.2 * max(1, len(keys))), squeeze=False, sharex=True)
    for ax, k in zip(axes[:, 0], keys):
        pts = [(r["step"], r[k]) for r in recs if k in r]
        if pts:
            ax.plot(*zip(*pts), label="train", lw=1)
        ev = [(r["step"], r[f"eval/{k}"]) for r in recs if f"eval/{k}" in r]
        if ev:
            ax.plot(*zip(*ev), "o-", label="eval", ms=3)
        ax.set_ylabel(k, fontsize=8)
        ax.legend(fontsize=7)
    axes[-1, 0].set_xlabel("step")
    fig.suptitle(title)
    fig.tight_layout()
    out = Path(output_dir) / "training.png"
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


# ---- output ---------------------------------------------------------------------------------------------


def save_output(acc, module: nn.Module, tok, output_dir: str | Path, merge_lora: bool, extra=None) -> Path:
    """`save_pretrained` the trained model (LoRA: the adapter in OUTPUT/adapter and, when merge_lora, the
    merged weights in OUTPUT) and the tokenizer, so transformers and vLLM load OUTPUT directly.

    Everything is written to `OUTPUT/.tmp-final` first (`extra(tmp)` may add or edit files there), fsynced,
    then moved into OUTPUT with `config.json` last and any old `config.json` removed first: a kill at any
    moment leaves either the previous model, or no loadable model, never a half-written one that loads."""
    from peft import PeftModel
    out = Path(output_dir)
    acc.wait_for_everyone()
    model = acc.unwrap_model(module).model
    state = acc.get_state_dict(module)  # gathers FSDP/ZeRO-3 shards on the main process
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / ".tmp-final"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        state = {k.removeprefix("model."): v for k, v in state.items()}
        if isinstance(model, PeftModel):
            model.save_pretrained(tmp / "adapter")
            if merge_lora:
                model.merge_and_unload().save_pretrained(tmp, safe_serialization=True)
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


def describe_examples(counts: Any) -> dict:
    return counts.as_dict() if hasattr(counts, "as_dict") else dict(counts)
