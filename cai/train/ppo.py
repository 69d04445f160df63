"""PPO with a per-token KL penalty, and RLOO: `cai train ppo|rloo` or `train_ppo(PPOConfig(...))`.

One iteration (Huang et al. 2024, "The N Implementation Details of RLHF with PPO"; METHOD.md, PPO/RLOO):
  1. rollout  — the engine (in-process vLLM, or transformers) samples responses to a batch of prompts;
  2. score    — reward model (normalised), d-RLAIF judge or Python callable; EOS trick;
  3. old/ref/value — training-policy log-probs at the sampling temperature, reference log-probs, values;
  4. KL       — per-token −β·log-ratio with the score at the last token (RLOO: sequence KL in the reward);
  5. GAE      — advantages and returns (γ=1, λ=0.95), whitened (RLOO: leave-one-out baseline);
  6. update   — `ppo.epochs` passes of `ppo.num_minibatches` clipped policy (+ clipped value) steps;
  7. sync     — the new weights go into the engine (`cai.engine.weight_sync`).
Old log-probs are RECOMPUTED by the training model (fp32) rather than taken from the engine, so the
ratio is exact whatever the engine's dtype; the engine/trainer log-prob gap is logged every step
(`logprob_gap`, raw log-probs, mean |Δ| per token) as a check of the sync.
"""
from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path

import torch

from cai.engine import make_engine
from cai.engine.weight_sync import sync_weights
from cai.train import common, forward, losses, rollout
from cai.train.batching import step_indices
from cai.train.config import config_error
from cai.train.distributed import check_fsdp, full_state_dict, part
from cai.train.lora import apply_lora
from cai.train.ppo_config import PPOConfig
from cai.train.ppo_monitor import PLOT_KEYS, Monitors
from cai.train.rm import load_reward_model


def train(cfg: PPOConfig, resume: bool = False, reward_fn=None) -> Path:
    # 1. processes, seed, tokenizer, prompts
    s = common.setup(cfg, resume)
    model_path, acc, tok = s.model_path, s.acc, s.tok
    prompts, prompt_ids, dropped = rollout.load_prompt_rows(cfg.data, tok)
    rloo, world, rank = cfg.algorithm == "rloo", acc.num_processes, acc.process_index
    if acc.distributed_type == "FSDP":
        check_fsdp(cfg, cfg.algorithm)
    K = cfg.ppo.rloo_k if rloo else 1
    if cfg.run.batch_size % world or (cfg.run.batch_size // world * K) % cfg.ppo.num_minibatches:
        raise config_error(cfg, "run.batch_size", f"{cfg.run.batch_size} prompts × {K} samples must split evenly "
                           f"over {world} processes and {cfg.ppo.num_minibatches} minibatches")
    if acc.is_main_process:
        import sys
        print(f"cai train {cfg.algorithm}: {len(prompts)} prompts ({dropped} dropped over "
              f"max_prompt_length={cfg.data.max_prompt_length})", file=sys.stderr)

    # 2. policy, reference (LoRA: the adapter disabled), value model (not for RLOO); dropout off in all
    policy = common.load_causal_lm(model_path, cfg.run.dtype, cfg.run.gradient_checkpointing)
    value = None if rloo else _load_value(cfg, model_path, tok, reward_fn)
    if cfg.lora.enabled:
        policy = apply_lora(policy, cfg.lora, cfg)
        if value is not None:
            value = apply_lora(value, cfg.lora, cfg, task="SEQ_CLS", modules_to_save=["score"])
    ref = None
    if not cfg.lora.enabled or cfg.ref_model:
        ref = common.load_causal_lm(common.resolve(cfg.ref_model or cfg.model, "ref_model"), cfg.run.dtype)
        ref.to(acc.device).eval().requires_grad_(False)
    module = forward.PolicyValue(policy, value)

    # 3. reward source and rollout engine
    reward = rollout.make_reward(cfg, reward_fn, acc.device)
    engine = make_rollout_engine(cfg, model_path)
    eos_ids = eos_token_ids(tok, model_path)

    # 4. optimizer, schedule, processes, resume
    t = common.start_training(acc, module, cfg, len(prompts), resume, cfg.algorithm,
                              updates_per_step=cfg.ppo.epochs * cfg.ppo.num_minibatches)
    module, opt, sched, ckpt, metrics, steps, state = t.module, t.opt, t.sched, t.ckpt, t.metrics, t.steps, t.state
    start, beta = t.start, state.get("beta", cfg.ppo.beta)
    monitors = Monitors(cfg.monitor, cfg.run.output_dir, acc.is_main_process, start, state.get("monitor"))
    inner = acc.unwrap_model(module)

    def sync() -> None:  # full weights on every process (each has its own engine): gathered from shards
        sync_weights(engine, inner.policy, part(full_state_dict(acc, module, everywhere=True), "policy."))
    sync()  # resumed or LoRA-merged weights, or an engine handed over by a caller

    last: dict = {}
    for step in range(start, steps):
        t = {}
        t0 = time.perf_counter()
        # 5. rollout: this process's share of the iteration's prompts, K samples each, seeded by (seed, step, row)
        glob = _step_prompts(len(prompts), cfg.run.batch_size, step, cfg.run.seed)
        mine = list(range(rank, len(glob), world))  # positions in the global batch; seeds follow them, so the
        index = [glob[g] for g in mine for _ in range(K)]  # samples do not depend on the process count
        seeds = [(cfg.run.seed * 1_000_003 + step * 10_007 + g * K + k) % 2**31 for g in mine for k in range(K)]
        batch = rollout.sample(engine, prompt_ids, index, seeds, cfg.rollout, tok, eos_ids)
        t["rollout"] = time.perf_counter() - t0

        # 6. score: reward (normalised), failures count as 0, EOS trick
        t1 = time.perf_counter()
        raw, norm = reward([prompts[i] for i in index], batch.texts)
        failed = [math.isnan(x) for x in norm]
        scores = torch.tensor([0.0 if f else x for f, x in zip(failed, norm)])
        if cfg.ppo.penalize_no_eos:
            scores = losses.penalize_no_eos(scores, batch.has_eos, cfg.ppo.no_eos_score)
        t["reward"] = time.perf_counter() - t1

        # 7. old log-probs (training policy, sampling temperature), reference log-probs, values: no grad
        t1 = time.perf_counter()
        old, ent, rawlp, old_values, ref_lp = _rollout_forwards(acc, inner, ref, batch, cfg)
        t["ref_value"] = time.perf_counter() - t1
        mask = batch.mask.float()
        seq_kl = ((old - ref_lp) * mask).sum(-1)  # (B,)

        # 8. KL in the reward, and advantages (PPO: per-token + GAE + whitening; RLOO: sequence + leave-one-out)
        if rloo:
            adv = losses.rloo_advantages(scores, seq_kl, K, beta)  # (B,)
            returns = None
        else:
            rewards, _ = losses.kl_shaped_rewards(scores, old, ref_lp, mask, beta)
            adv, returns = losses.gae_advantages(rewards, old_values, mask, cfg.ppo.gamma, cfg.ppo.lam)
            if cfg.ppo.whiten_advantages:
                adv = _whiten_global(acc, adv, mask, cfg.rollout.max_new_tokens)

        # 9. update: epochs × minibatches, each one optimizer step; token (PPO) or sequence (RLOO) mean
        t1 = time.perf_counter()
        upd = _update(acc, module, opt, sched, cfg, batch, old, old_values, adv, returns, step)
        t["update"] = time.perf_counter() - t1

        # 10. sync: the engine samples the next batch from the updated weights
        t1 = time.perf_counter()
        sync()
        t["sync"] = time.perf_counter() - t1

        # 11. monitors, metrics, samples, adaptive β, checkpoint
        row = _gather_rows(acc, raw, scores.tolist(), batch.lengths.tolist(), seq_kl.tolist(),
                           batch.has_eos.tolist(), failed)
        n_tok = common.reduce_sum(acc, mask.sum()).item()
        gap = common.reduce_sum(acc, ((batch.engine_logps - rawlp).abs() * mask).sum()).item() / max(n_tok, 1)
        ent_mean = common.reduce_sum(acc, (ent * mask).sum()).item() / max(n_tok, 1)
        kl_mean = sum(row["kl"]) / len(row["kl"])
        dt = time.perf_counter() - t0
        last = {"reward/score": _mean(row["score"]), "reward/raw": _nanmean(row["raw"]), "kl": kl_mean,
                "entropy": ent_mean, "length/mean": _mean(row["length"]),
                "length/limit_frac": _mean([float(n >= cfg.rollout.max_new_tokens and not e)
                                            for n, e in zip(row["length"], row["eos"])]),
                "length/no_eos_frac": _mean([float(not e) for e in row["eos"]]),
                "reward/failures": sum(row["failed"]), "logprob_gap": gap, "beta": beta, **upd,
                **{f"time/{k}": v for k, v in t.items()}, "lr": sched.get_last_lr()[0], "tokens": n_tok,
                "step_time_s": dt, "tokens_per_s": n_tok / dt}
        last.update(monitors.observe(step + 1, row["score"], row["length"], kl_mean))
        metrics.log(step + 1, last)
        monitors.samples(step + 1, [prompts[i] for i in index], batch.texts, scores.tolist())
        if cfg.ppo.adaptive_kl:
            beta = losses.adaptive_kl_beta(beta, kl_mean, cfg.ppo.kl_target, cfg.ppo.kl_horizon, len(row["kl"]))
        common.step_delay()
        if cfg.run.save_every and (step + 1) % cfg.run.save_every == 0 and step + 1 < steps:
            ckpt.save(step + 1, {"stage": cfg.algorithm, "beta": beta, "monitor": monitors.state()})

    # 12. model (policy; LoRA merged when lora.merge), value model, card, plot
    metrics.close()
    engine.close()
    return common.finish(acc, module, tok, cfg, cfg.algorithm, model_path, model_attr="policy",
                         provenance={"source": cfg.data.path, "rows": len(prompts)},
                         counts={"prompts": len(prompts), "dropped": dropped},
                         final={k: v for k, v in last.items() if not k.startswith("time/")},
                         details={"steps": steps, "warnings": monitors.warnings},
                         plot_keys=PLOT_KEYS, plot_title=f"{cfg.algorithm.upper()} monitors")


def make_rollout_engine(cfg: PPOConfig, model_path: Path):
    """The in-process rollout engine, started from the initial policy weights."""
    r = cfg.rollout
    if r.engine == "vllm":
        return make_engine("vllm", str(model_path), dtype=r.dtype, max_model_len=r.max_model_len,
                           enforce_eager=True, kv_cache_memory_bytes=r.kv_cache_mb * 2**20, seed=cfg.run.seed)
    return make_engine("hf", str(model_path), dtype=r.dtype, max_model_len=r.max_model_len, seed=cfg.run.seed)


def _load_value(cfg: PPOConfig, model_path: Path, tok, reward_fn):
    """Value model: `value_model`, else the reward model (kind rm), else the policy with a fresh scalar head."""
    if cfg.value_model:
        path = common.resolve(cfg.value_model, "value_model")
    elif cfg.reward.kind == "rm" and reward_fn is None:
        path = common.resolve(cfg.reward.model, "reward.model")
    else:
        path = model_path
    return load_reward_model(path, cfg.run.dtype, tok.pad_token_id, cfg.run.gradient_checkpointing)


def eos_token_ids(tok, model_path: Path) -> list[int]:
    from transformers import GenerationConfig
    ids = {tok.eos_token_id}
    try:
        eos = GenerationConfig.from_pretrained(model_path).eos_token_id
        ids |= set(eos if isinstance(eos, list) else [eos])
    except OSError:
        pass
    return sorted(i for i in ids if i is not None)


def _step_prompts(n: int, batch_size: int, step: int, seed: int) -> list[int]:
    return step_indices(n, batch_size, step, seed)


def window(batch, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """The smallest window of `rows` of the batch: (input_ids, attention_mask, P', R') with the prompt
    columns that are padding in every row cut on the left and the response columns past every row's end
    cut on the right. Exact: left padding is masked and positions come from the mask's cumsum; a response
    column past a row's end is padding whose log-prob, value and loss are masked anyway."""
    P = batch.P
    am = batch.attention_mask[rows]
    lead = int(am[:, :P].sum(-1).max())  # longest prompt of these rows
    r = max(1, int(batch.mask[rows].sum(-1).max()))  # longest response of these rows
    return batch.input_ids[rows, P - lead:P + r], am[:, P - lead:P + r], lead, r


def by_length(batch, rows: torch.Tensor, size: int) -> list[torch.Tensor]:
    """`rows` in chunks of `size`, longest responses together, so that each chunk's window is tight."""
    order = rows[torch.argsort(batch.mask[rows].sum(-1), descending=True, stable=True)]
    return list(order.split(size))


@torch.no_grad()
def _rollout_forwards(acc, inner, ref, batch, cfg: PPOConfig):
    """(old log-probs, entropy, raw log-probs, values or None, reference log-probs), each (B, R) and 0 past
    each response's end, in micro-batches of similar length, each cut to its own window (`window`)."""
    B, R, T, dev = batch.input_ids.size(0), batch.response_ids.size(1), cfg.rollout.temperature, acc.device
    outs = {k: torch.zeros(B, R) for k in ("old", "ent", "raw", "val", "ref")}
    has_value = False
    inner.eval()
    for rows in by_length(batch, torch.arange(B), cfg.run.micro_batch_size):
        ids, am, P, r = window(batch, rows)
        ids, am = ids.to(dev), am.to(dev)
        old, ent, raw, val = inner(ids, am, P, r, T, with_entropy=True)
        if ref is not None:
            ref_lp = forward.policy_logps(ref, ids, am, P, r, T)[0]
        else:  # LoRA: the reference is the base with the adapter disabled
            with inner.policy.disable_adapter():
                ref_lp = forward.policy_logps(inner.policy, ids, am, P, r, T)[0]
        m = batch.mask[rows, :r].float()
        for k, v in (("old", old), ("ent", ent), ("raw", raw), ("val", val), ("ref", ref_lp)):
            if v is not None:
                outs[k][rows, :r] = v.float().cpu() * m
        has_value = val is not None
    inner.train()
    return outs["old"], outs["ent"], outs["raw"], outs["val"] if has_value else None, outs["ref"]


def _whiten_global(acc, adv: torch.Tensor, mask: torch.Tensor, width: int) -> torch.Tensor:
    """`losses.whiten` over the whole batch of all processes (padded to `width` columns to gather)."""
    if acc.num_processes == 1:
        return losses.whiten(adv, mask)
    R = adv.size(1)
    pad = (0, width - R)
    a = acc.gather(torch.nn.functional.pad(adv, pad).to(acc.device)).cpu()
    m = acc.gather(torch.nn.functional.pad(mask, pad).to(acc.device)).cpu()
    w = losses.whiten(a, m)
    n = adv.size(0)
    return w[acc.process_index * n:(acc.process_index + 1) * n, :R]


def _update(acc, module, opt, sched, cfg: PPOConfig, batch, old, old_values, adv, returns, step: int) -> dict:
    """`ppo.epochs` × `ppo.num_minibatches` optimizer steps on this rollout batch; returns mean statistics."""
    rloo = cfg.algorithm == "rloo"
    n, M, world, dev = batch.input_ids.size(0), cfg.ppo.num_minibatches, acc.num_processes, acc.device
    T, clip = cfg.rollout.temperature, cfg.ppo.clip
    mask = batch.mask.float()
    old_seq = (old * mask).sum(-1)
    stats = {k: 0.0 for k in ("loss/policy", "loss/value", "clipfrac", "approx_kl", "grad_norm")}
    counts = {"n_steps": 0}
    for epoch in range(cfg.ppo.epochs):
        g = torch.Generator().manual_seed(cfg.run.seed * 7919 + step * 131 + epoch)
        perm = torch.randperm(n, generator=g)
        for mb in perm.chunk(M):
            denom = common.reduce_sum(acc, mask[mb].sum()).item() if not rloo else len(mb) * world
            micro = by_length(batch, mb, cfg.run.micro_batch_size)  # similar lengths: tight windows
            for j, mi in enumerate(micro):
                sync = contextlib.nullcontext() if j == len(micro) - 1 else acc.no_sync(module)
                with sync:
                    ids, am, P, r = window(batch, mi)  # (b, P' + r): no all-padding columns
                    m = mask[mi, :r].to(dev)
                    logps, _, _, values = module(ids.to(dev), am.to(dev), P, r, T)
                    o = old[mi, :r].to(dev)  # (b, r)
                    if rloo:  # sequence-level ratio, as TRL's RLOOTrainer
                        logps, o = (logps * m).sum(-1), old_seq[mi].to(dev)
                        m = torch.ones_like(logps)
                        pg = losses.rloo_policy_loss(logps, o, adv[mi].to(dev), clip).sum()
                        vf = torch.zeros((), device=dev)
                    else:
                        pg = (losses.ppo_policy_loss(logps, o, adv[mi, :r].to(dev), clip) * m).sum()
                        vf = (losses.ppo_value_loss(values, old_values[mi, :r].to(dev), returns[mi, :r].to(dev),
                                                    cfg.ppo.vf_clip) * m).sum()
                    # sum / global count (tokens for PPO, sequences for RLOO); × world because DDP averages
                    acc.backward((pg + cfg.ppo.vf_coef * vf) / denom * world)
                lp = logps.detach()
                stats["loss/policy"] += pg.item() / denom
                stats["loss/value"] += vf.item() / denom
                stats["clipfrac"] += (losses.clip_fraction(lp, o, clip) * m).sum().item() / denom
                stats["approx_kl"] += (losses.approx_kl(lp, o) * m).sum().item() / denom
            stats["grad_norm"] += common.optimizer_step(acc, module, opt, sched, cfg.optim.max_grad_norm)
            counts["n_steps"] += 1
    # each process summed its share of every minibatch mean: add the shares, then average over the steps
    return {k: (v if k == "grad_norm" else common.reduce_sum(acc, v).item()) / counts["n_steps"]
            for k, v in stats.items()}


def _gather_rows(acc, raw, scores, lengths, kl, eos, failed) -> dict:
    rows = {"raw": raw, "score": scores, "length": lengths, "kl": kl, "eos": eos, "failed": failed}
    if acc.num_processes == 1:
        return rows
    from accelerate.utils import gather_object
    return {k: gather_object(v) for k, v in rows.items()}


def _mean(x: list) -> float:
    return sum(x) / len(x) if x else math.nan


def _nanmean(x: list) -> float:
    return _mean([v for v in x if not math.isnan(v)])


train_ppo = train  # the pipeline registry's entry point name (`cai.train.ppo:train_ppo`)
