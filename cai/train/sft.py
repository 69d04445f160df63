"""Supervised fine-tuning on chat `messages`: `cai train sft` or `train(SFTConfig(...))`.

Conversations are rendered with the model's chat template; the loss is the token-mean negative
log-likelihood of the assistant tokens only (system and user turns, and template scaffolding, are
context). The mean is over the whole global batch, so any split into micro-batches and processes gives
the same loss and gradient. Optional packing puts several conversations in one row without letting
them attend to each other.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path

import torch

from cai.train import batching, common, data, forward, losses, packing
from cai.train.config import SFTConfig
from cai.train.lora import apply_lora
from cai.train.metrics import report_data

METRIC_KEYS = ["loss", "grad_norm", "lr"]


def train(cfg: SFTConfig, resume: bool = False) -> Path:
    # 1. processes, seed, tokenizer, data
    s = common.setup(cfg, resume)
    model_path, acc, tok = s.model_path, s.acc, s.tok
    prep = data.prepare(cfg, tok, ("messages",),
                        lambda row, counts: data.tokenize_sft(tok, row["messages"], cfg.data.max_length, counts))
    report_data(acc, "sft", prep)
    train_ex = batching.pack_sft(prep.train, cfg.data.max_length) if cfg.packing else prep.train
    n_targets = [sum(e.labels_mask[1:]) for e in train_ex]  # scored tokens per example

    # 2. model (with LoRA: an adapter over the frozen base)
    model = common.load_causal_lm(model_path, cfg.run.dtype, cfg.run.gradient_checkpointing)
    if cfg.lora.enabled:
        model = apply_lora(model, cfg.lora, cfg)
    module = forward.CompletionLogps(model)

    # 3. optimizer, schedule, processes, resume
    t = common.start_training(acc, module, cfg, len(train_ex), resume, "sft")
    module, opt, sched, ckpt, metrics, steps, start = t.module, t.opt, t.sched, t.ckpt, t.metrics, t.steps, t.start
    lengths = [len(e.input_ids) for e in train_ex]
    world = acc.num_processes

    module.train()
    last = {}
    for step in range(start, steps):
        t0 = time.perf_counter()
        # 4. this process's micro-batches of global batch `step`
        idx = batching.step_indices(len(train_ex), cfg.run.batch_size, step, cfg.run.seed)
        n_global = sum(n_targets[i] for i in idx)  # every process knows the whole batch: no all-reduce
        if cfg.run.tokens_per_batch:  # padding-free: forwards of at most tokens_per_batch tokens
            micro = packing.token_micro_batches(idx, lengths, acc.process_index, world, cfg.run.tokens_per_batch)
        else:
            micro = batching.shard_micro_batches(idx, lengths, acc.process_index, world, cfg.run.micro_batch_size)
        nll_sum, tokens = torch.zeros((), dtype=torch.float64), 0
        input_tokens = sum(len(train_ex[i].input_ids) for mb in micro for i in mb)  # this process's, for throughput
        for j, mb in enumerate(micro):
            sync = contextlib.nullcontext() if j == len(micro) - 1 else acc.no_sync(module)
            with sync:
                # 5. log-probs of the assistant tokens only
                nll, n_tok = _nll(module, [train_ex[i] for i in mb], tok.pad_token_id, acc.device,
                                  cfg.run.tokens_per_batch > 0)
                # 6. token mean over the global batch; × world because DDP averages gradients
                acc.backward(nll / n_global * world)
            nll_sum += nll.detach().double().cpu()
            tokens += n_tok
        # 7. optimizer step and metrics
        gnorm = common.optimizer_step(acc, module, opt, sched, cfg.optim.max_grad_norm)
        loss = common.reduce_sum(acc, nll_sum).item() / n_global
        tokens = common.reduce_sum(acc, tokens).item()
        input_tokens = common.reduce_sum(acc, input_tokens).item()
        dt = time.perf_counter() - t0
        last = {"loss": loss, "lr": sched.get_last_lr()[0], "grad_norm": gnorm, "tokens": tokens,
                "input_tokens": input_tokens,
                "step_time_s": dt, "tokens_per_s": tokens / dt}
        metrics.log(step + 1, last)
        common.step_delay()
        # 8. checkpoint and evaluation
        if cfg.run.save_every and (step + 1) % cfg.run.save_every == 0 and step + 1 < steps:
            ckpt.save(step + 1, {"stage": "sft"})
        if cfg.run.eval_every and (step + 1) % cfg.run.eval_every == 0 and prep.eval:
            metrics.log(step + 1, evaluate(acc, module, prep.eval, cfg, tok.pad_token_id))
    # 9. final evaluation, model, card, plot
    final = {"loss": last.get("loss")}
    if prep.eval:
        ev = evaluate(acc, module, prep.eval, cfg, tok.pad_token_id)
        metrics.log(steps, ev)
        final.update(ev)
    metrics.close()
    return common.finish(acc, module, tok, cfg, "sft", model_path, provenance=prep.provenance,
                         counts=prep.counts.as_dict(), final=final,
                         details={"steps": steps, "packing": cfg.packing, "rows_per_step": cfg.run.batch_size},
                         plot_keys=METRIC_KEYS, plot_title="SFT")


def _nll(module, exs: list, pad_id: int, device, packed: bool = False) -> tuple[torch.Tensor, int]:
    """Summed NLL of the scored tokens of a micro-batch, and their count (padded, or one packed row)."""
    if packed:
        logps, n_tok = module(packed=packing.pack_sft(exs).to(device))  # (b,), (b,)
        return losses.sft_token_nll(logps).sum(), int(n_tok.sum())
    batch = batching.collate_sft(exs, pad_id)
    batch = {k: (v.to(device) if v is not None else None) for k, v in batch.items()}
    logps, n_tok = module(batch["input_ids"], batch["attention_mask"], batch["completion_mask"],
                          position_ids=batch.get("position_ids"))  # (b,), (b,)
    return losses.sft_token_nll(logps).sum(), int(n_tok.sum())


@torch.no_grad()
def evaluate(acc, module, exs: list, cfg: SFTConfig, pad_id: int) -> dict:
    """Held-out token-mean NLL of the assistant tokens, and its perplexity."""
    module.eval()
    nll, n = torch.zeros((), dtype=torch.float64), 0
    mine = list(range(acc.process_index, len(exs), acc.num_processes))
    for i in range(0, len(mine), cfg.run.micro_batch_size):
        s, k = _nll(module, [exs[j] for j in mine[i:i + cfg.run.micro_batch_size]], pad_id, acc.device,
                    cfg.run.tokens_per_batch > 0)
        nll, n = nll + s.double().cpu(), n + k
    module.train()
    nll, n = common.reduce_sum(acc, nll).item(), common.reduce_sum(acc, n).item()
    loss = nll / max(n, 1)
    return {"eval/loss": loss, "eval/perplexity": float(torch.tensor(loss).exp())}
