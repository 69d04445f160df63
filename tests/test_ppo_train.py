"""PPO optimises: on the tiny model with a programmatic reward, 20 iterations raise the mean reward by at
least 3 standard errors, with the KL to the reference finite and logged, monitors in metrics.jsonl,
samples in samples.jsonl and the monitor plot written. Rollouts on the transformers engine (no vLLM start)."""
import json
import math

from cai.testing import make_tiny_model
from cai.train import PPOConfig, train_ppo
from cai.train.config import OptimConfig, RunConfig
from cai.train.ppo_config import MonitorConfig, PPOHyper, PromptDataConfig, RolloutConfig

WORDS = "cats dogs rain sun tea bread music trees rivers stars clouds stones".split()


def make_prompts(path, n=12):
    path.write_text("".join(json.dumps({"prompt": f"Tell me about {w}."}) + "\n" for w in WORDS[:n]))
    return path


def peaked_tiny_model(out):
    """The tiny random Llama with its (tied) embeddings ×10. At init its next-token distribution is nearly
    uniform over 49k tokens (entropy 10.8 nats), so no reward on token identity gets any signal in 20
    iterations; scaled, it is peaked and context-dependent like a trained LM's (entropy ~1 nat)."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tiny = make_tiny_model()
    model = AutoModelForCausalLM.from_pretrained(tiny)
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(10.0)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny).save_pretrained(out)
    shutil.copy(tiny / "generation_config.json", out)
    return out


class TargetTokens:
    """Reward = fraction of a response's tokens (re-encoded from its text) in a target set: ids ≡ 0 mod 4."""

    def __init__(self, tok):
        self.tok = tok

    def __call__(self, prompts, responses):
        out = []
        for r in responses:
            ids = self.tok(r, add_special_tokens=False)["input_ids"]
            out.append(sum(i % 4 == 0 for i in ids) / len(ids) if ids else 0.0)
        return out


def _mean_se(x):
    m = sum(x) / len(x)
    var = sum((v - m) ** 2 for v in x) / (len(x) - 1)
    return m, math.sqrt(var / len(x))


def test_ppo_raises_a_programmatic_reward(tmp_path):
    from transformers import AutoTokenizer
    tiny = peaked_tiny_model(tmp_path / "model")
    cfg = PPOConfig(model=str(tiny), data=PromptDataConfig(path=str(make_prompts(tmp_path / "p.jsonl"))),
                    rollout=RolloutConfig(engine="hf", temperature=1.0, max_new_tokens=8),
                    ppo=PPOHyper(epochs=2, num_minibatches=2, penalize_no_eos=False),
                    monitor=MonitorConfig(sample_every=1, samples=12),
                    run=RunConfig(output_dir=str(tmp_path / "run"), batch_size=12, micro_batch_size=12,
                                  max_steps=20, save_every=0, progress=False),
                    optim=OptimConfig(lr=1e-3, scheduler="constant"))
    out = train_ppo(cfg, reward_fn=TargetTokens(AutoTokenizer.from_pretrained(tiny)))
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(1, 21))
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    first = [s["score"] for s in samples if s["step"] <= 3]
    last = [s["score"] for s in samples if s["step"] >= 18]
    (m0, se0), (m1, se1) = _mean_se(first), _mean_se(last)
    assert m1 - m0 >= 3 * math.sqrt(se0 ** 2 + se1 ** 2), (m0, se0, m1, se1)
    for m in metrics:  # the monitors are logged every step, and the KL stays finite
        assert math.isfinite(m["kl"]) and math.isfinite(m["entropy"]) and math.isfinite(m["loss/value"])
        for k in ("reward/raw", "length/mean", "length/limit_frac", "length/no_eos_frac", "clipfrac",
                  "approx_kl", "reward_length_corr", "logprob_gap", "time/rollout", "time/sync"):
            assert k in m, k
    assert metrics[-1]["kl"] > 0.1  # the policy moved away from the reference
    assert max(m["logprob_gap"] for m in metrics) < 1e-3  # the hf engine samples from the synced weights
    assert (out / "training.png").stat().st_size > 10_000
    assert (out / "model.safetensors").is_file() and (out / "README.md").is_file()
