"""DPO (and IPO, cDPO, robust DPO) on preference pairs: `cai train dpo` or `train(DPOConfig(...))`.

The reference log-probs are computed once before training and cached on disk, keyed by the hashes of
the tokenised dataset and the reference weights; each step then needs one policy forward/backward over
chosen and rejected together. Soft AI labels act as per-pair label smoothing ε = 1 − p_chosen in cDPO;
robust DPO uses one flip rate ε for the dataset (`robust_epsilon`, configured or estimated from them).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import time
from pathlib import Path

import torch

from cai.models import cache_dir, model_hash
from cai.train import batching, common, data, forward, losses, packing
from cai.train.config import DPOConfig, config_error
from cai.train.lora import apply_lora
from cai.train.metrics import report_data

METRIC_KEYS = ["loss", "rewards/chosen", "rewards/rejected", "rewards/accuracy", "rewards/margin",
               "logps/chosen", "logps/rejected"]
REF_CACHE_VERSION = "1"
# The largest flip rate `robust_epsilon: auto` accepts: 1/(1 − 2ε) = 5. Above it the labels are close to coin
# flips, and robust DPO would amplify them; a user who means it sets the number.
ROBUST_AUTO_MAX = 0.4


def train(cfg: DPOConfig, resume: bool = False) -> Path:
    # 1. processes, seed, tokenizer, data
    s = common.setup(cfg, resume)
    model_path, acc, tok = s.model_path, s.acc, s.tok
    prep = data.prepare(cfg, tok, ("prompt", "chosen", "rejected"), lambda row, counts: data.tokenize_pair_dpo(
        tok, row, cfg.data.max_length, cfg.data.truncation_mode, counts))
    soft = cfg.soft_labels and any(e.p_chosen != 1.0 for e in prep.train)
    if soft and cfg.loss_type == "ipo":
        raise config_error(cfg, "loss_type", "IPO cannot use soft labels (p_chosen); set soft_labels: false")
    check_loss_data(cfg, prep, soft)
    robust_eps = robust_epsilon(cfg, prep, soft)
    report_data(acc, "dpo", prep)

    # 2. policy (with LoRA: an adapter over the frozen base)
    policy = common.load_causal_lm(model_path, cfg.run.dtype, cfg.run.gradient_checkpointing)
    if cfg.lora.enabled:
        policy = apply_lora(policy, cfg.lora, cfg)
    module = forward.CompletionLogps(policy)

    # 3. reference log-probs, once, cached on disk: (N,) for train then eval examples
    examples = prep.train + prep.eval
    t_ref = time.perf_counter()
    ref_c, ref_r = reference_logps(acc, cfg, module, model_path, examples)
    t_ref = time.perf_counter() - t_ref
    ref_c, ref_r = ref_c.to(acc.device), ref_r.to(acc.device)
    n_train = len(prep.train)

    # 4. optimizer, schedule, processes, resume
    t = common.start_training(acc, module, cfg, n_train, resume, "dpo")
    module, opt, sched, ckpt, metrics, steps, start = t.module, t.opt, t.sched, t.ckpt, t.metrics, t.steps, t.start
    loss_fn = losses.DPO_LOSSES[cfg.loss_type]
    packed = cfg.run.tokens_per_batch > 0
    lengths = [packing.pair_tokens(e) if packed else e.length for e in prep.train]
    B, world = cfg.run.batch_size, acc.num_processes

    module.train()
    last = {}
    for step in range(start, steps):
        t0 = time.perf_counter()
        # 5. this process's micro-batches of global batch `step`
        idx = batching.step_indices(n_train, B, step, cfg.run.seed)
        if packed:  # padding-free, prompt shared: forwards of at most tokens_per_batch tokens
            micro = packing.token_micro_batches(idx, lengths, acc.process_index, world, cfg.run.tokens_per_batch)
        else:
            micro = batching.shard_micro_batches(idx, lengths, acc.process_index, world, cfg.run.micro_batch_size)
        sums: dict[str, torch.Tensor] = {}
        for j, mb in enumerate(micro):
            sync = contextlib.nullcontext() if j == len(micro) - 1 else acc.no_sync(module)
            with sync:
                # 6. policy log-probs of chosen and rejected in one forward
                out = pair_losses(module, [prep.train[i] for i in mb], ref_c[mb], ref_r[mb], cfg, soft, loss_fn,
                                  tok.pad_token_id, acc.device, robust_eps=robust_eps)
                # 7. sum over pairs / global batch; × world because DDP averages gradients over processes
                acc.backward(out["loss"].sum() / B * world)
            common.accumulate(sums, out)
        # 8. optimizer step
        gnorm = common.optimizer_step(acc, module, opt, sched, cfg.optim.max_grad_norm)
        # 9. metrics over the global batch
        last = _finish(acc, sums, B)
        last.update(lr=sched.get_last_lr()[0], grad_norm=gnorm, step_time_s=time.perf_counter() - t0)
        last["tokens_per_s"] = last["tokens"] / last["step_time_s"]
        metrics.log(step + 1, last)
        common.step_delay()
        # 10. checkpoint and evaluation
        if cfg.run.save_every and (step + 1) % cfg.run.save_every == 0 and step + 1 < steps:
            ckpt.save(step + 1, {"stage": "dpo"})
        if cfg.run.eval_every and (step + 1) % cfg.run.eval_every == 0 and prep.eval:
            metrics.log(step + 1, evaluate(acc, module, prep.eval, ref_c[n_train:], ref_r[n_train:], cfg, soft,
                                           loss_fn, tok.pad_token_id, robust_eps))
    # 11. final evaluation, model, card, plot
    final = {k: v for k, v in last.items() if k in METRIC_KEYS}
    if prep.eval:
        ev = evaluate(acc, module, prep.eval, ref_c[n_train:], ref_r[n_train:], cfg, soft, loss_fn, tok.pad_token_id,
                      robust_eps)
        metrics.log(steps, ev)
        final.update(ev)
    metrics.close()
    def add_timings(tmp: Path) -> None:
        (tmp / "timings.json").write_text(json.dumps({"reference_logps_s": t_ref}) + "\n")

    return common.finish(acc, module, tok, cfg, "dpo", model_path, provenance=prep.provenance,
                         counts=prep.counts.as_dict(), final=final,
                         details={"loss_type": cfg.loss_type, "soft_labels_used": soft, "steps": steps,
                                  "reference_logps_seconds": round(t_ref, 2),
                                  **({"robust_epsilon": robust_eps} if cfg.loss_type == "robust" else {})},
                         plot_keys=METRIC_KEYS, plot_title=f"DPO ({cfg.loss_type}, β={cfg.beta})", extra=add_timings)


def check_loss_data(cfg: DPOConfig, prep, soft: bool) -> None:
    """Refuse loss/data combinations that would silently train something else or divide by zero."""
    if cfg.loss_type == "cdpo" and not soft and cfg.label_smoothing == 0:
        # without p_chosen and with ε = 0, cDPO *is* plain DPO: the user asked for something else
        raise config_error(cfg, "loss_type", "cdpo needs soft labels (a p_chosen column in the data, with "
                           "soft_labels: true) or label_smoothing > 0; this data has no p_chosen")


def robust_epsilon(cfg: DPOConfig, prep, soft: bool) -> float:
    """Robust DPO's one flip rate ε for the dataset: `robust_epsilon`, or with "auto" the training pairs'
    mean(1 − p_chosen) (`losses.flip_rate_from_soft_labels`), refused above ROBUST_AUTO_MAX. 0 for the
    other losses."""
    if cfg.loss_type != "robust":
        return 0.0
    if cfg.robust_epsilon != "auto":
        return float(cfg.robust_epsilon)
    if not soft:
        raise config_error(cfg, "robust_epsilon", "auto estimates the flip rate from p_chosen, and this data has "
                           "no soft labels (or soft_labels is false): set robust_epsilon to the share of flipped "
                           "labels you expect, e.g. 0.1")
    eps = losses.flip_rate_from_soft_labels(torch.tensor([e.p_chosen for e in prep.train]))
    if eps > ROBUST_AUTO_MAX:
        scale = f"×{1 / (1 - 2 * eps):.0f}" if eps < 0.5 else "unbounded"
        raise config_error(cfg, "robust_epsilon", f"auto: the soft labels give ε = {eps:.3f} (mean 1 − p_chosen "
                           f"over {len(prep.train)} training pairs, above {ROBUST_AUTO_MAX}); robust DPO would scale "
                           f"the loss {scale} and it has no lower bound: use loss_type: cdpo for labels this "
                           "uncertain, or set robust_epsilon to a number below 0.5")
    return eps


def pair_losses(module, exs: list, ref_c: torch.Tensor, ref_r: torch.Tensor, cfg: DPOConfig, soft: bool,
                loss_fn, pad_id: int, device, *, robust_eps: float = 0.0) -> dict:
    """Per-pair loss and logged quantities for a micro-batch of pairs (each (b,)). `robust_eps`: robust DPO's
    flip rate for the dataset (`robust_epsilon`)."""
    logps, n_tok, tokens = pair_logps(module, exs, pad_id, device, cfg.run.tokens_per_batch > 0)  # (2b,), (2b,)
    chosen, rejected = logps.chunk(2)  # (b,) each
    len_c, len_r = n_tok.chunk(2)
    p_chosen = torch.tensor([e.p_chosen for e in exs], dtype=torch.float32, device=device)  # (b,)
    if cfg.loss_type == "robust":
        eps = robust_eps  # one population rate (Chowdhury et al. 2024), never 1 − p per pair
    else:
        eps = (1 - p_chosen) if soft else cfg.label_smoothing
    c_ratio, r_ratio = chosen - ref_c, rejected - ref_r  # log π/π_ref of each response, (b,)
    loss = loss_fn(c_ratio, r_ratio, cfg.beta, eps, chosen_len=len_c, rejected_len=len_r)  # (b,)
    extra = {}
    if cfg.rpo_alpha > 0:
        nll = losses.rpo_nll(chosen, len_c)  # (b,)
        loss = loss + cfg.rpo_alpha * nll
        extra["nll/chosen"] = nll.detach()
    rc, rr = losses.dpo_implicit_rewards(c_ratio, r_ratio, cfg.beta)
    return {**extra, "loss": loss, "rewards/chosen": rc, "rewards/rejected": rr, "rewards/accuracy": (rc > rr).float(),
            "rewards/margin": rc - rr, "logps/chosen": chosen.detach(), "logps/rejected": rejected.detach(),
            "tokens": tokens}


def pair_logps(module, exs: list, pad_id: int, device, packed: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Summed log-probs (2b,) of chosen then rejected, scored tokens (2b,), and the pairs' real tokens
    (prompt counted per response): one padded (2b, T) batch, or one packed row with the prompt shared."""
    if packed:
        p = packing.pack_pairs(exs)
        logps, n_tok = module(packed=p.to(device))
        return logps, n_tok, torch.tensor(float(p.real_tokens), device=device)
    batch = batching.collate_pairs(exs, pad_id)
    logps, n_tok = module(batch["input_ids"].to(device), batch["attention_mask"].to(device),
                          batch["completion_mask"].to(device))
    return logps, n_tok, batch["attention_mask"].sum().float().to(device)


def _finish(acc, sums: dict, n_pairs: int) -> dict:
    """Per-pair means over the global batch (tokens: total)."""
    out = {}
    for k, v in sums.items():
        total = common.reduce_sum(acc, v).item()
        out[k] = total if k == "tokens" else total / n_pairs
    return out


@torch.no_grad()
def evaluate(acc, module, exs: list, ref_c, ref_r, cfg: DPOConfig, soft: bool, loss_fn, pad_id: int,
             robust_eps: float = 0.0) -> dict:
    """Held-out DPO loss, reward accuracy and margins (pairs split over processes)."""
    module.eval()
    sums: dict = {}
    mine = list(range(acc.process_index, len(exs), acc.num_processes))
    for i in range(0, len(mine), cfg.run.micro_batch_size):
        mb = mine[i:i + cfg.run.micro_batch_size]
        common.accumulate(sums, pair_losses(module, [exs[j] for j in mb], ref_c[mb], ref_r[mb], cfg, soft, loss_fn,
                                      pad_id, acc.device, robust_eps=robust_eps))
    module.train()
    if not sums:  # this process had no held-out pairs
        keys = METRIC_KEYS + ["tokens"] + (["nll/chosen"] if cfg.rpo_alpha > 0 else [])
        sums = {k: torch.zeros((), dtype=torch.float64) for k in keys}
    return {f"eval/{k}": v for k, v in _finish(acc, sums, len(exs)).items() if k != "tokens"}


# ---- reference log-probs --------------------------------------------------------------------------------


def reference_logps(acc, cfg: DPOConfig, module, model_path: Path, examples: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed reference log-probs (N,), (N,) of chosen and rejected, computed once and cached on disk.

    The reference is `cfg.ref_model` when given; otherwise the initial policy — with LoRA, the same module
    with the adapter disabled (no second copy of the weights)."""
    ref_path = common.resolve(cfg.ref_model, "ref_model") if cfg.ref_model else model_path
    key = hashlib.sha256("|".join([REF_CACHE_VERSION, data.examples_hash(examples), model_hash(ref_path),
                                   cfg.run.dtype]).encode()).hexdigest()[:32]
    cache = Path(cfg.ref_cache_dir or cache_dir() / "ref_logps") / f"{key}.pt"
    if cache.is_file():
        saved = torch.load(cache)
        return saved["chosen"], saved["rejected"]

    # each process scores a strided share, longest first in batches of similar length
    mine = sorted(range(acc.process_index, len(examples), acc.num_processes), key=lambda i: examples[i].length)
    if cfg.ref_model:
        ref = forward.CompletionLogps(common.load_causal_lm(ref_path, cfg.run.dtype)).to(acc.device)
        no_adapter = contextlib.nullcontext()
    else:
        ref = module.to(acc.device)
        no_adapter = module.model.disable_adapter() if cfg.lora.enabled else contextlib.nullcontext()
    ref.eval()
    results = []
    with torch.no_grad(), no_adapter:
        for i in range(0, len(mine), cfg.run.micro_batch_size * 2):
            mb = mine[i:i + cfg.run.micro_batch_size * 2]
            logps, _, _ = pair_logps(ref, [examples[j] for j in mb], 0, acc.device, cfg.run.tokens_per_batch > 0)
            c, r = logps.float().cpu().chunk(2)
            results += list(zip(mb, c.tolist(), r.tolist()))
    module.train()
    if acc.num_processes > 1:
        from accelerate.utils import gather_object
        results = gather_object(results)
    chosen, rejected = torch.zeros(len(examples)), torch.zeros(len(examples))
    for i, c, r in results:
        chosen[i], rejected[i] = c, r
    if acc.is_main_process:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp{id(results)}")
        torch.save({"chosen": chosen, "rejected": rejected, "key": key}, tmp)
        tmp.replace(cache)
    return chosen, rejected
