"""Bradley-Terry reward model: `cai train rm` or `train(RMConfig(...))`.

A sequence classifier with one output, initialised from the SFT model (or any causal LM), reads the
reward at the last real token of prompt + response. It trains on soft labels `p_chosen` when present,
reports held-out accuracy and reward mean/std, and finally fits a gain and bias so that a reference set
(SFT-policy samples, or the held-out responses) scores mean 0 and std 1. The normalisation is saved in
`config.json` (`reward_normalization`) and `reward_normalization.json`; consumers compute g·r + b.
"""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import torch

from cai.data.sources import as_messages
from cai.errors import InputError
from cai.train import batching, common, data, forward, losses, packing
from cai.train.config import RMConfig, config_error
from cai.train.lora import apply_lora
from cai.train.metrics import report_data

METRIC_KEYS = ["loss", "accuracy", "margin", "reward_mean", "reward_std"]


def load_reward_model(path: Path, dtype: str, pad_token_id: int, gradient_checkpointing: bool = False):
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the fresh `score` head is expected, not worth a load report
    try:
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=getattr(torch, dtype))
    finally:
        hf_logging.set_verbosity(level)
    model.config.pad_token_id = pad_token_id
    common.disable_dropout(model)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model


def train(cfg: RMConfig, resume: bool = False) -> Path:
    # 1. processes, seed, tokenizer, data
    s = common.setup(cfg, resume, lora_task="SEQ_CLS")
    model_path, acc, tok = s.model_path, s.acc, s.tok
    prep = data.prepare(cfg, tok, ("prompt", "chosen", "rejected"),
                        lambda row, counts: data.tokenize_pair_rm(tok, row, cfg.data.max_length, counts))
    norm_seqs, norm_source = normalization_sequences(cfg, tok, prep)  # read now: a bad path fails before training
    soft = cfg.soft_labels and any(e.p_chosen != 1.0 for e in prep.train)
    check_loss_data(cfg, prep, soft)
    report_data(acc, "rm", prep)

    # 2. model: scalar head on the initial LM (with LoRA the head is trained in full)
    model = load_reward_model(model_path, cfg.run.dtype, tok.pad_token_id, cfg.run.gradient_checkpointing)
    if cfg.lora.enabled:
        model = apply_lora(model, cfg.lora, cfg, task="SEQ_CLS", modules_to_save=["score"])
    module = forward.LastTokenReward(model)

    # 3. optimizer, schedule, processes, resume
    t = common.start_training(acc, module, cfg, len(prep.train), resume, "rm")
    module, opt, sched, ckpt, metrics, steps, start = t.module, t.opt, t.sched, t.ckpt, t.metrics, t.steps, t.start
    packed = cfg.run.tokens_per_batch > 0
    lengths = [packing.pair_tokens(e) if packed else e.length for e in prep.train]
    B, world = cfg.run.batch_size, acc.num_processes

    module.train()
    last = {}
    for step in range(start, steps):
        t0 = time.perf_counter()
        # 4. this process's micro-batches of global batch `step`
        idx = batching.step_indices(len(prep.train), B, step, cfg.run.seed)
        if packed:  # padding-free, prompt shared: forwards of at most tokens_per_batch tokens
            micro = packing.token_micro_batches(idx, lengths, acc.process_index, world, cfg.run.tokens_per_batch)
        else:
            micro = batching.shard_micro_batches(idx, lengths, acc.process_index, world, cfg.run.micro_batch_size)
        sums: dict = {}
        for j, mb in enumerate(micro):
            sync = contextlib.nullcontext() if j == len(micro) - 1 else acc.no_sync(module)
            with sync:
                # 5. rewards of chosen and rejected in one forward; BT loss on soft labels
                out = pair_losses(module, [prep.train[i] for i in mb], cfg, soft, tok.pad_token_id, acc.device)
                # 6. mean over the global batch's pairs; × world because DDP averages gradients
                acc.backward(out["loss"].sum() / B * world)
            common.accumulate(sums, out)
        # 7. optimizer step and metrics
        gnorm = common.optimizer_step(acc, module, opt, sched, cfg.optim.max_grad_norm)
        last = _finish(acc, sums, B)
        last.update(lr=sched.get_last_lr()[0], grad_norm=gnorm, step_time_s=time.perf_counter() - t0)
        last["tokens_per_s"] = last["tokens"] / last["step_time_s"]
        metrics.log(step + 1, last)
        common.step_delay()
        # 8. checkpoint and evaluation
        if cfg.run.save_every and (step + 1) % cfg.run.save_every == 0 and step + 1 < steps:
            ckpt.save(step + 1, {"stage": "rm"})
        if cfg.run.eval_every and (step + 1) % cfg.run.eval_every == 0 and prep.eval:
            metrics.log(step + 1, evaluate(acc, module, prep.eval, cfg, soft, tok.pad_token_id))
    # 9. final evaluation
    final = {k: v for k, v in last.items() if k in METRIC_KEYS}
    if prep.eval:
        ev = evaluate(acc, module, prep.eval, cfg, soft, tok.pad_token_id)
        metrics.log(steps, ev)
        final.update(ev)
    metrics.close()
    # 10. reward normalisation: gain and bias for mean 0, std 1 on the reference samples
    rewards = score(acc, module, norm_seqs, cfg.run.micro_batch_size, tok.pad_token_id)
    gain, bias = losses.reward_normalization(rewards)
    norm = {"gain": gain, "bias": bias, "n": len(norm_seqs), "source": norm_source,
            "raw_mean": float(rewards.mean()), "raw_std": float(rewards.std(unbiased=False))}
    # 11. model and normalisation (written together, atomically), card, plot
    def add_normalization(tmp: Path) -> None:
        conf = json.loads((tmp / "config.json").read_text())
        conf["reward_normalization"] = {"gain": gain, "bias": bias}
        (tmp / "config.json").write_text(json.dumps(conf, indent=2, sort_keys=True) + "\n")
        (tmp / "reward_normalization.json").write_text(json.dumps(norm, indent=2) + "\n")

    return common.finish(acc, module, tok, cfg, "rm", model_path, provenance=prep.provenance,
                         counts=prep.counts.as_dict(), final=final,
                         details={"reward_normalization": norm, "soft_labels_used": soft, "steps": steps},
                         plot_keys=METRIC_KEYS, plot_title="Reward model", extra=add_normalization)


def check_loss_data(cfg: RMConfig, prep, soft: bool) -> None:
    """Refuse a margin on soft-labelled pairs (`losses.bradley_terry_loss`: the optimum would not be
    logit(p_chosen)), before any model loads."""
    if not soft:
        return
    soft_margin = [e for e in prep.train + prep.eval if 0.0 < e.p_chosen < 1.0 and e.extra.get("margin", cfg.margin)]
    if not soft_margin:
        return
    why = ("a margin is for hard labels: with a soft p_chosen it moves the optimum of r_c − r_r off logit(p) "
           "(p = 0.75, margin 1: σ(r_c − r_r) = 0.856)")
    if cfg.margin and not any("margin" in e.extra for e in soft_margin):
        raise config_error(cfg, "margin", f"{why}; {len(soft_margin)} pairs have a soft p_chosen: set margin: 0, "
                           "or soft_labels: false to train the hard labels with the margin")
    raise config_error(cfg, "soft_labels", f"{why}; {len(soft_margin)} pairs of {cfg.data.path} have both a margin "
                       "column and a soft p_chosen: set soft_labels: false to train the hard labels with the margins, "
                       "or drop the margin column")


def pair_losses(module, exs: list, cfg: RMConfig, soft: bool, pad_id: int, device) -> dict:
    """Per-pair loss and logged quantities for a micro-batch of pairs (each (b,))."""
    if cfg.run.tokens_per_batch:  # one packed row, prompt shared; rewards read at each response's last token
        packed = packing.pack_pairs(exs)
        rewards = module(packed=packed.to(device))  # (2b,)
        tokens = torch.tensor(float(packed.real_tokens), device=device)
    else:
        batch = batching.collate_pairs(exs, pad_id)
        rewards = module(batch["input_ids"].to(device), batch["attention_mask"].to(device))  # (2b,)
        tokens = batch["attention_mask"].sum().float().to(device)
    rc, rr = rewards.chunk(2)  # (b,) each
    p = torch.tensor([e.p_chosen for e in exs], dtype=torch.float32, device=device) if soft else None
    # a per-row `margin` column wins over the config's margin (TRL's RewardTrainer reads the same column)
    margin = torch.tensor([e.extra.get("margin", cfg.margin) for e in exs], dtype=rc.dtype, device=device)  # (b,)
    loss = losses.bradley_terry_loss(rc, rr, p, margin)  # (b,)
    if cfg.center_rewards_coefficient:
        loss = loss + cfg.center_rewards_coefficient * losses.center_rewards_penalty(rc, rr)
    rc, rr = rc.detach(), rr.detach()
    return {"loss": loss, "accuracy": (rc > rr).float(), "margin": rc - rr,
            "reward_sum": rc + rr, "reward_sq": rc ** 2 + rr ** 2, "tokens": tokens}


def _finish(acc, sums: dict, n_pairs: int) -> dict:
    tot = {k: common.reduce_sum(acc, v).item() for k, v in sums.items()}
    mean = tot["reward_sum"] / (2 * n_pairs)
    var = max(tot["reward_sq"] / (2 * n_pairs) - mean ** 2, 0.0)
    return {"loss": tot["loss"] / n_pairs, "accuracy": tot["accuracy"] / n_pairs, "margin": tot["margin"] / n_pairs,
            "reward_mean": mean, "reward_std": var ** 0.5, "tokens": tot["tokens"]}


@torch.no_grad()
def evaluate(acc, module, exs: list, cfg: RMConfig, soft: bool, pad_id: int) -> dict:
    """Held-out loss, accuracy (r_c > r_r), margin and reward mean/std (pairs split over processes)."""
    module.eval()
    sums: dict = {}
    mine = list(range(acc.process_index, len(exs), acc.num_processes))
    for i in range(0, len(mine), cfg.run.micro_batch_size):
        common.accumulate(sums, pair_losses(module, [exs[j] for j in mine[i:i + cfg.run.micro_batch_size]], cfg, soft,
                                      pad_id, acc.device))
    module.train()
    if not sums:
        sums = {k: torch.zeros((), dtype=torch.float64) for k in
                ("loss", "accuracy", "margin", "reward_sum", "reward_sq", "tokens")}
    return {f"eval/{k}": v for k, v in _finish(acc, sums, len(exs)).items() if k != "tokens"}


@torch.no_grad()
def score(acc, module, seqs: list[list[int]], micro: int, pad_id: int) -> torch.Tensor:
    """Rewards (N,) of token sequences, in batches of similar length, split over processes."""
    module.eval()
    mine = sorted(range(acc.process_index, len(seqs), acc.num_processes), key=lambda i: len(seqs[i]))
    res = []
    for i in range(0, len(mine), micro * 2):
        mb = mine[i:i + micro * 2]
        ids = batching.pad_right([seqs[j] for j in mb], pad_id)
        mask = batching.pad_right([[1] * len(seqs[j]) for j in mb], 0)
        res += list(zip(mb, module(ids.to(acc.device), mask.to(acc.device)).float().cpu().tolist()))
    module.train()
    if acc.num_processes > 1:
        from accelerate.utils import gather_object
        res = gather_object(res)
    out = torch.zeros(len(seqs))
    for i, r in res:
        out[i] = r
    return out


# Configs of a cai dataset that hold policy responses, in order of preference: `cai sample`/`cai rlaif`
# (`samples`), `cai generate` (`responses`), SFT conversations (`sft`).
NORMALIZE_CONFIGS = ("samples", "responses", "sft")


def normalization_sequences(cfg: RMConfig, tok, prep) -> tuple[list[list[int]], str]:
    """Token sequences to normalise on (METHOD.md: policy samples): `normalize_with`, a cai dataset with
    responses (`samples`, `responses`: prompt + response; `sft`: messages) or a file of such rows or of
    pairs; empty means the held-out pairs' responses (else the training pairs')."""
    if cfg.normalize_with:
        from pathlib import Path
        root = Path(cfg.normalize_with)
        config = next((c for c in NORMALIZE_CONFIGS if (root / c).is_dir()), "")
        rows = data.read_split(cfg.normalize_with, config, cfg.data.split, field_name="normalize_with")
        seqs = []
        for r in rows.rows:
            if r.get("messages"):
                seqs.append(data.chat_ids(tok, as_messages(r["messages"])))
            elif isinstance(r.get("response"), str) and r.get("prompt") is not None:
                msgs = as_messages(r["prompt"]) + [{"role": "assistant", "content": r["response"]}]
                seqs.append(data.chat_ids(tok, msgs))
            elif {"prompt", "chosen", "rejected"} <= set(r):
                ex = data.tokenize_pair_rm(tok, r, 10 ** 9, data.Counts())
                seqs += [ex.chosen_ids, ex.rejected_ids]
        seqs = [s[-cfg.data.max_length:] for s in seqs]
        if not seqs:
            raise InputError("no policy responses to normalise on: needs `prompt` + `response` (cai sample / "
                             "generate), `messages`, or prompt/chosen/rejected rows", file=rows.source,
                             field="normalize_with")
        return seqs, f"{rows.source}" + (f" ({config})" if config else "")
    exs = prep.eval or prep.train
    return [s for e in exs for s in (e.chosen_ids, e.rejected_ids)], "held-out pairs" if prep.eval else "train pairs"
