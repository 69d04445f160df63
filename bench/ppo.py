"""PPO and RLOO iterations on SmolLM2-135M (fp32, CPU unless CUDA is present): per-phase breakdown and ratios.

1. cai PPO, vLLM rollouts, a random-head reward model (normalisation gain 1, bias 0) that also initialises the
   value model: seconds per phase (rollout, reward, reference+value, update, sync) per iteration.
2. `rollout_ratio_vllm_vs_hf`: rollout tokens per second of the same `rollout.sample` call on the in-process
   vLLM engine (the PPO run's iterations) and on the transformers engine (same prompts, seeds, length).
3. `rloo_iteration_ratio_vs_trl`: cai RLOO (vLLM rollouts) against TRL 1.16's RLOOTrainer (its default
   transformers generation; TRL 1.16 supports vLLM <= 0.31 and this venv has 0.32) on the same prompts,
   model, reward function, K, batch, generation length, one update per batch and fp32: response tokens per
   second over whole iterations (generation, scoring, reference, update), the first iteration excluded.
Each measurement runs in its own subprocess, so its peak RSS is its own.

    python bench/ppo.py [--iterations 3] [--gen 64] [--prompts 8] [--k 4]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def reward_fn(prompts, completions, **_):
    """The shared programmatic reward (cai callable and TRL reward function): fraction of letters that are
    vowels. TRL passes conversational completions as message lists."""
    out = []
    for c in completions:
        text = c[-1]["content"] if isinstance(c, list) else c
        letters = [ch for ch in text.lower() if ch.isalpha()]
        out.append(sum(ch in "aeiou" for ch in letters) / len(letters) if letters else 0.0)
    return out


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _prompts(n: int) -> list[str]:
    rows = [json.loads(x) for x in (REPO / "data" / "red_team.jsonl").read_text().splitlines() if x.strip()]
    return [r["prompt"] for r in rows[:n]]


def make_random_rm(model: str, out: Path) -> Path:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    torch.manual_seed(0)
    rm = AutoModelForSequenceClassification.from_pretrained(model, num_labels=1, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(model)
    rm.config.pad_token_id = tok.pad_token_id
    rm.save_pretrained(out)
    tok.save_pretrained(out)
    (out / "reward_normalization.json").write_text(json.dumps({"gain": 1.0, "bias": 0.0}))
    return out


# ---- workers (one per subprocess) ---------------------------------------------------------------------


def _cai_config(args, tmp: Path, algorithm: str, prompts: Path, rm: Path | None):
    from cai.train import PPOConfig
    from cai.train.config import OptimConfig, RunConfig
    from cai.train.ppo_config import PPOHyper, PromptDataConfig, RewardConfig, RolloutConfig
    rloo = algorithm == "rloo"
    n_prompts = args.prompts // args.k if rloo else args.prompts
    rows = n_prompts * (args.k if rloo else 1)
    return PPOConfig(
        model=args.model_path, algorithm=algorithm,
        reward=RewardConfig(kind="rm", model=str(rm)) if rm else RewardConfig(kind="callable"),
        data=PromptDataConfig(path=str(prompts)),
        rollout=RolloutConfig(engine="vllm", temperature=0.7, max_new_tokens=args.gen, kv_cache_mb=256),
        ppo=PPOHyper(rloo_k=args.k, epochs=1 if rloo else args.epochs, num_minibatches=1 if rloo else 2),
        run=RunConfig(output_dir=str(tmp / f"cai-{algorithm}"), batch_size=n_prompts, micro_batch_size=rows,
                      max_steps=args.iterations, save_every=0, progress=False),
        optim=OptimConfig(lr=1e-6, scheduler="constant"))


def worker_cai(args, tmp: Path, algorithm: str) -> dict:
    from cai.train.metrics import read_metrics
    from cai.train.ppo import train
    prompts = tmp / "prompts.jsonl"
    rm = make_random_rm(args.model_path, tmp / "rm") if algorithm == "ppo" else None
    cfg = _cai_config(args, tmp, algorithm, prompts, rm)
    out = train(cfg, reward_fn=None if rm else reward_fn)
    recs = read_metrics(out / "metrics.jsonl")
    return {"step_s": [r["step_time_s"] for r in recs], "tokens": [r["tokens"] for r in recs],
            "phases": {k[5:]: [r[k] for r in recs] for k in recs[0] if k.startswith("time/")},
            "logprob_gap": [r["logprob_gap"] for r in recs], "peak_rss_mb": _peak_rss_mb()}


def worker_hf_rollout(args, tmp: Path) -> dict:
    """The PPO run's rollout call on the transformers engine: same prompts, seeds, temperature and length."""
    from cai.engine.hf_engine import HFEngine
    from cai.train import common, rollout
    from cai.train.ppo import eos_token_ids
    cfg = _cai_config(args, tmp, "ppo", tmp / "prompts.jsonl", None)
    tok = common.load_tokenizer(Path(args.model_path))
    prompts, ids, _ = rollout.load_prompt_rows(cfg.data, tok)
    engine = HFEngine(args.model_path, dtype="float32", max_model_len=cfg.rollout.max_model_len)
    eos = eos_token_ids(tok, Path(args.model_path))
    times, tokens = [], []
    for it in range(args.iterations):
        index = list(range(len(prompts)))[: cfg.run.batch_size]
        seeds = [(it * 10_007 + j) % 2**31 for j in range(len(index))]
        t0 = time.perf_counter()
        b = rollout.sample(engine, ids, index, seeds, cfg.rollout, tok, eos)
        times.append(time.perf_counter() - t0)
        tokens.append(int(b.mask.sum()))
    return {"rollout_s": times, "tokens": tokens, "peak_rss_mb": _peak_rss_mb()}


def worker_trl(args, tmp: Path) -> dict:
    import torch
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    n_prompts = args.prompts // args.k
    tok = AutoTokenizer.from_pretrained(args.model_path)
    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in _prompts(n_prompts)])
    targs = trl.RLOOConfig(
        output_dir=str(tmp / "trl-rloo"), per_device_train_batch_size=n_prompts * args.k, num_generations=args.k,
        max_completion_length=args.gen, temperature=0.7, beta=0.05, num_iterations=1, max_steps=args.iterations,
        learning_rate=1e-6, bf16=False, report_to=[], save_strategy="no", logging_steps=1, seed=0,
        use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0, gradient_checkpointing=False)
    trainer = trl.RLOOTrainer(model=AutoModelForCausalLM.from_pretrained(args.model_path, dtype=torch.float32),
                              reward_funcs=reward_fn, args=targs, train_dataset=ds, processing_class=tok)
    times, lengths = [], []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t0)

        def on_log(self, a, s, c, logs=None, **k):
            if logs and "completions/mean_length" in logs:
                lengths.append(logs["completions/mean_length"])

    trainer.add_callback(Timer())
    trainer.train()
    return {"step_s": times, "tokens": [m * n_prompts * args.k for m in lengths], "peak_rss_mb": _peak_rss_mb()}


# ---- driver -------------------------------------------------------------------------------------------


def _rate(tokens: list, secs: list) -> float:
    t, s = tokens[1:] or tokens, secs[1:] or secs  # the first iteration is warm-up
    return sum(t) / sum(s)


def run_worker(args, which: str, tmp: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", which, "--tmp", str(tmp), "--iterations", str(args.iterations),
           "--gen", str(args.gen), "--prompts", str(args.prompts), "--k", str(args.k), "--model", args.model,
           "--threads", str(args.threads), "--epochs", str(args.epochs)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if r.returncode != 0:
        sys.exit(f"{which} failed:\n{r.stderr[-3000:]}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res["wall_s"] = time.perf_counter() - t0
    if args.verbose:
        print(f"  {which}: {json.dumps(res)}", flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--gen", type=int, default=64, help="max new tokens per response")
    ap.add_argument("--prompts", type=int, default=8, help="PPO prompts per iteration; RLOO uses prompts/k × k")
    ap.add_argument("--k", type=int, default=4, help="RLOO samples per prompt")
    ap.add_argument("--epochs", type=int, default=2, help="PPO epochs per batch (2 minibatches each)")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker (1 is stable on a shared box)")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--worker", choices=["cai-ppo", "cai-rloo", "hf-rollout", "trl-rloo"])
    ap.add_argument("--tmp")
    args = ap.parse_args()
    from cai.models import resolve_model
    args.model_path = str(resolve_model(args.model))
    if args.worker:
        import torch
        torch.set_num_threads(args.threads)
        tmp = Path(args.tmp)
        fn = {"cai-ppo": lambda: worker_cai(args, tmp, "ppo"), "cai-rloo": lambda: worker_cai(args, tmp, "rloo"),
              "hf-rollout": lambda: worker_hf_rollout(args, tmp), "trl-rloo": lambda: worker_trl(args, tmp)}
        print(json.dumps(fn[args.worker]()))
        return

    tmp = Path(tempfile.mkdtemp(prefix="cai-bench-ppo-"))
    (tmp / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in _prompts(args.prompts)))
    print(f"# SmolLM2-135M fp32, {args.iterations} iterations (first excluded), gen {args.gen} tokens, PPO "
          f"{args.prompts} prompts × {args.epochs} epochs × 2 minibatches, RLOO {args.prompts // args.k} prompts × "
          f"K={args.k}, {args.threads} torch thread(s) per worker, {os.cpu_count()} cpus", flush=True)
    ppo = run_worker(args, "cai-ppo", tmp)
    print("ppo phase breakdown (s per iteration, mean of iterations 2..N):")
    for k, v in ppo["phases"].items():
        v = v[1:] or v
        print(f"  {k:10s} {sum(v) / len(v):8.2f}")
    print(f"  total      {sum(ppo['step_s'][1:] or ppo['step_s']) / max(1, len(ppo['step_s']) - 1):8.2f}   "
          f"(peak RSS {ppo['peak_rss_mb']:.0f} MB, max rollout/train log-prob gap {max(ppo['logprob_gap']):.2e})")
    upd, total = ppo["phases"]["update"][1:] or ppo["phases"]["update"], ppo["step_s"][1:] or ppo["step_s"]
    print(f"ppo_update_fraction_of_iteration={sum(upd) / sum(total):.2f}")
    hf = run_worker(args, "hf-rollout", tmp)
    r_vllm = _rate(ppo["tokens"], ppo["phases"]["rollout"])
    r_hf = _rate(hf["tokens"], hf["rollout_s"])
    print(f"rollout: vllm {r_vllm:.1f} tok/s, hf {r_hf:.1f} tok/s")
    print(f"rollout_ratio_vllm_vs_hf={r_vllm / r_hf:.2f}")
    cai = run_worker(args, "cai-rloo", tmp)
    trl = run_worker(args, "trl-rloo", tmp)
    t_cai, t_trl = _rate(cai["tokens"], cai["step_s"]), _rate(trl["tokens"], trl["step_s"])
    print(f"rloo: cai {t_cai:.1f} tok/s (peak RSS {cai['peak_rss_mb']:.0f} MB), trl {t_trl:.1f} tok/s "
          f"(peak RSS {trl['peak_rss_mb']:.0f} MB)")
    print(f"rloo_iteration_ratio_vs_trl={t_cai / t_trl:.2f}")
    print(f"peak_rss_mb_cai_ppo={ppo['peak_rss_mb']:.0f}")
    print(f"peak_rss_mb_cai_rloo={cai['peak_rss_mb']:.0f}")
    print(f"peak_rss_mb_trl_rloo={trl['peak_rss_mb']:.0f}")


if __name__ == "__main__":
    main()
