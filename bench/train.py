"""cai vs TRL 1.16 training throughput on SmolLM2-135M (fp32, CPU unless CUDA is present): DPO, RM and SFT.

Both sides get the same 64 preference pairs (SFT: their prompt + chosen conversations), batches of 8 rows,
the same max length, precision and step count. Each measurement runs in its own subprocess so that its
peak RSS is its own. Throughput is real tokens per second of optimizer steps (DPO/RM: chosen + rejected,
prompt counted in each, no padding; SFT: conversation tokens), the first step excluded as warm-up.

What each side packs: cai with `run.tokens_per_batch` (`--tokens-per-batch`, 0 = padded micro-batches)
runs each process's share of the batch as padding-free rows of at most that many tokens, pairs with their
prompt run once. TRL's DPOTrainer and RewardTrainer pad chosen and rejected to the batch's longest (TRL
1.16 ignores `padding_free` for DPO); its SFTTrainer runs with its own packing (`packing=True`, best-fit
decreasing into `max_length` rows, padding-free: the batch flattened into one row with restarted
position ids, on CPU attended through transformers' block-diagonal mask over that row), on
prompt/completion rows so that, like cai, only the completion is trained. TRL runs in fp32 (its CPU
default is bf16 autocast) and both sides use the same gradient-checkpointing setting (off by default;
TRL's own default is on). cai's DPO computes reference log-probs once before training; that one-off cost is
printed separately, and also amortised over one epoch (8 steps) for an end-to-end comparison.

    python bench/train.py [--steps 3] [--max-length 512] [--only dpo|rm|sft] [--tokens-per-batch 1024]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

N_PAIRS, BATCH = 64, 8


def make_pairs(out: Path, seed: int = 0) -> Path:
    """64 pairs with varied lengths (~100-250 tokens per sequence, like the issue's 2.4k tokens / 8 pairs)."""
    from cai.testing.datasets import BAD, GOOD, TOPICS, write_dataset_dir
    rng = random.Random(seed)
    rows = []
    for i in range(N_PAIRS):
        t = TOPICS[i % len(TOPICS)]
        q = f"Question {i}: can you tell me about {t}? " + "Please explain the background and the details. " * rng.randint(0, 6)
        good = " ".join(rng.choice(GOOD).format(t=t, T=t.capitalize()) for _ in range(rng.randint(2, 7)))
        bad = " ".join(rng.choice(BAD).format(t=t, T=t.capitalize()) for _ in range(rng.randint(1, 6)))
        rows.append({"prompt": [{"role": "user", "content": q}], "chosen": [{"role": "assistant", "content": good}],
                     "rejected": [{"role": "assistant", "content": bad}], "p_chosen": 1.0})
    return write_dataset_dir(out, "prefs", rows, {"bench": True})


def _rows(data: Path) -> list[dict]:
    import pyarrow.parquet as pq
    return pq.read_table(data / "prefs" / "train-00000-of-00001.parquet").to_pylist()


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---- workers (one per subprocess) ---------------------------------------------------------------------


def worker_trl(kind: str, model: str, data: Path, steps: int, max_length: int, tmp: Path, gc: bool) -> dict:
    import torch
    import trl
    from datasets import Dataset
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        TrainerCallback,
    )
    tok = AutoTokenizer.from_pretrained(model)
    if kind == "sft":
        ds = Dataset.from_list([{"prompt": r["prompt"], "completion": r["chosen"]} for r in _rows(data)])
    else:
        ds = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in _rows(data)])
    common = {"output_dir": str(tmp / f"trl-{kind}"), "per_device_train_batch_size": BATCH, "max_steps": steps,
              "max_length": max_length, "bf16": False, "report_to": [], "save_strategy": "no", "logging_steps": 1,
              "use_cpu": not torch.cuda.is_available(), "dataloader_num_workers": 0, "seed": 0,
              "gradient_checkpointing": gc}
    if kind == "dpo":
        args = trl.DPOConfig(beta=0.1, **common)
        trainer = trl.DPOTrainer(model=AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32), args=args,
                                 train_dataset=ds, processing_class=tok)
    elif kind == "sft":
        args = trl.SFTConfig(packing=True, padding_free=True, **common)
        trainer = trl.SFTTrainer(model=AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32), args=args,
                                 train_dataset=ds, processing_class=tok)
    else:
        args = trl.RewardConfig(**common)
        m = AutoModelForSequenceClassification.from_pretrained(model, num_labels=1, dtype=torch.float32)
        m.config.pad_token_id = tok.pad_token_id
        trainer = trl.RewardTrainer(model=m, args=args, train_dataset=ds, processing_class=tok)
    times, tokens = [], []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t0, self.tok0 = time.perf_counter(), trainer._total_train_tokens

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t0)
            tokens.append(trainer._total_train_tokens - self.tok0)

    trainer.add_callback(Timer())
    trainer.train()
    return {"step_s": times, "tokens": tokens, "peak_rss_mb": _peak_rss_mb()}


def sft_data(pairs: Path, out: Path) -> Path:
    """The pairs' prompt + chosen as `sft` conversations (what TRL's SFT side reads as prompt/completion)."""
    from cai.testing.datasets import write_dataset_dir
    rows = [{"messages": r["prompt"] + r["chosen"]} for r in _rows(pairs)]
    return write_dataset_dir(out, "sft", rows, {"bench": True})


def worker_cai(kind: str, model: str, data: Path, steps: int, max_length: int, tmp: Path, gc: bool,
               micro: int, tokens_per_batch: int) -> dict:
    from cai.train import DataConfig, DPOConfig, RMConfig, RunConfig, SFTConfig
    from cai.train.metrics import read_metrics
    run = RunConfig(output_dir=str(tmp / f"cai-{kind}"), batch_size=BATCH, micro_batch_size=micro, max_steps=steps,
                    save_every=0, progress=False, gradient_checkpointing=gc, tokens_per_batch=tokens_per_batch)
    d = DataConfig(path=str(data), eval_fraction=0.0, max_length=max_length)
    if kind == "sft":
        from cai.train.sft import train
        d.path = str(sft_data(data, tmp / "sft"))
        out = train(SFTConfig(model=model, data=d, run=run))
    elif kind == "dpo":
        from cai.train.dpo import train
        out = train(DPOConfig(model=model, data=d, run=run, ref_cache_dir=str(tmp / "ref-cache")))
    else:
        from cai.train.rm import train
        out = train(RMConfig(model=model, data=d, run=run))
    recs = [r for r in read_metrics(out / "metrics.jsonl") if "step_time_s" in r]
    res = {"step_s": [r["step_time_s"] for r in recs], "tokens": [r["input_tokens" if kind == "sft" else "tokens"]
                                                                     for r in recs],
           "peak_rss_mb": _peak_rss_mb()}
    if kind == "dpo":
        res["reference_logps_s"] = json.loads((out / "timings.json").read_text())["reference_logps_s"]
    return res


# ---- driver -------------------------------------------------------------------------------------------


def tokens_per_s(res: dict) -> float:
    s, t = res["step_s"][1:] or res["step_s"], res["tokens"][1:] or res["tokens"]  # first step = warm-up
    return sum(t) / sum(s)


def _gc(args, which: str) -> str:
    """Gradient checkpointing of one side: each library's default (TRL on, cai off) or the same for both."""
    if args.gradient_checkpointing == "defaults":
        return "on" if which == "trl" else "off"
    return args.gradient_checkpointing


def run_worker(args, which: str, kind: str, data: Path, tmp: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", which, "--kind", kind, "--data", str(data), "--tmp", str(tmp),
           "--steps", str(args.steps), "--max-length", str(args.max_length), "--model", args.model,
           "--micro", str(args.micro), "--tokens-per-batch", str(args.tokens_per_batch), "--threads", str(args.threads),
           "--gc", _gc(args, which)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if r.returncode != 0:
        sys.exit(f"{which} {kind} failed:\n{r.stderr[-3000:]}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res["wall_s"] = time.perf_counter() - t0
    if args.verbose:
        print(f"  {which} {kind}: {json.dumps(res)}", flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--micro", type=int, default=8, help="cai micro-batch (pairs); the global batch stays 8")
    ap.add_argument("--tokens-per-batch", type=int, default=1024,
                    help="cai padding-free packing: tokens per forward (0 = padded micro-batches of --micro rows)")
    ap.add_argument("--only", choices=["dpo", "rm", "sft"])
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both sides (oversubscribed "
                    "OpenMP threads on a shared machine make timings 10x noisier; 1 is the stable choice)")
    ap.add_argument("--verbose", action="store_true", help="print each worker's raw timings")
    ap.add_argument("--gradient-checkpointing", choices=["defaults", "on", "off"], default="off",
                    help="on/off: the same for both (default off: like for like); defaults: each library's own "
                    "(TRL 1.16 turns it on, which makes TRL slower and leaner, cai off)")
    ap.add_argument("--gc", choices=["on", "off"], help=argparse.SUPPRESS)
    ap.add_argument("--worker", choices=["cai", "trl"])
    ap.add_argument("--kind", choices=["dpo", "rm", "sft"])
    ap.add_argument("--data")
    ap.add_argument("--tmp")
    args = ap.parse_args()
    if args.worker:
        import torch
        torch.set_num_threads(args.threads)
        from cai.models import resolve_model
        model = str(resolve_model(args.model))
        fn = worker_trl if args.worker == "trl" else worker_cai
        extra = {} if args.worker == "trl" else {"micro": args.micro, "tokens_per_batch": args.tokens_per_batch}
        res = fn(args.kind, model, Path(args.data), args.steps, args.max_length, Path(args.tmp), args.gc == "on",
                 **extra)
        print(json.dumps(res))
        return

    tmp = Path(tempfile.mkdtemp(prefix="cai-bench-train-"))
    data = make_pairs(tmp / "pairs")
    print(f"# SmolLM2-135M fp32, {N_PAIRS} pairs, batch {BATCH} pairs, max_length {args.max_length}, "
          f"{args.steps} steps (first excluded), {args.threads} torch thread(s) each, {os.cpu_count()} cpus, "
          f"gradient checkpointing: trl {_gc(args, 'trl')}, cai {_gc(args, 'cai')}", flush=True)
    pack = (f"padding-free rows of <= {args.tokens_per_batch} tokens, pairs share their prompt"
            if args.tokens_per_batch else f"padded micro-batches of {args.micro}")
    print(f"# cai packs: {pack}; trl packs: DPO/RM nothing (padded to the batch's longest), SFT its own "
          "packing=True (bfd, padding-free)", flush=True)
    for kind in ("dpo", "rm", "sft"):
        if args.only and kind != args.only:
            continue
        trl_res = run_worker(args, "trl", kind, data, tmp)
        cai_res = run_worker(args, "cai", kind, data, tmp)
        t_trl, t_cai = tokens_per_s(trl_res), tokens_per_s(cai_res)
        print(f"{kind}: trl {t_trl:.1f} tok/s ({sum(trl_res['step_s'][1:]) / max(1, len(trl_res['step_s']) - 1):.1f} s/step, "
              f"peak RSS {trl_res['peak_rss_mb']:.0f} MB); cai {t_cai:.1f} tok/s "
              f"({sum(cai_res['step_s'][1:]) / max(1, len(cai_res['step_s']) - 1):.1f} s/step, "
              f"peak RSS {cai_res['peak_rss_mb']:.0f} MB)", flush=True)
        print(f"{kind}_tokens_per_s_ratio_vs_trl={t_cai / t_trl:.2f}")
        print(f"{kind}_peak_rss_mb_trl={trl_res['peak_rss_mb']:.0f}")
        print(f"{kind}_peak_rss_mb_cai={cai_res['peak_rss_mb']:.0f}")
        if kind == "dpo":
            # one epoch = 8 steps: cai pays the reference pass once, TRL a reference forward every step
            ep_tokens = sum(cai_res["tokens"]) / len(cai_res["tokens"]) * (N_PAIRS // BATCH)
            cai_epoch = cai_res["reference_logps_s"] + ep_tokens / t_cai
            trl_epoch = ep_tokens / t_trl
            print(f"dpo: cai reference log-probs (once, {N_PAIRS} pairs): {cai_res['reference_logps_s']:.1f} s")
            print(f"dpo_epoch_time_ratio_vs_trl_incl_reference={trl_epoch / cai_epoch:.2f}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
