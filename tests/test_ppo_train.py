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


def _tiny_rm(out, gain=2.0, bias=-1.0):
    """A reward model directory as `cai train rm` leaves it: scalar head and reward_normalization.json."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    tiny = make_tiny_model()
    torch.manual_seed(0)
    rm = AutoModelForSequenceClassification.from_pretrained(tiny, num_labels=1)
    tok = AutoTokenizer.from_pretrained(tiny)
    rm.config.pad_token_id = tok.pad_token_id
    rm.save_pretrained(out)
    tok.save_pretrained(out)
    (out / "reward_normalization.json").write_text(json.dumps({"gain": gain, "bias": bias}))
    return out


def _short_run(tmp_path, **kw):
    base = dict(model=str(make_tiny_model()), data=PromptDataConfig(path=str(make_prompts(tmp_path / "p.jsonl", 4))),
                rollout=RolloutConfig(engine="hf", max_new_tokens=4),
                run=RunConfig(output_dir=str(tmp_path / "run"), batch_size=2, micro_batch_size=4, max_steps=1,
                              save_every=0, progress=False))
    base["ppo"] = kw.pop("ppo", PPOHyper(epochs=1, num_minibatches=1, penalize_no_eos=False))
    return PPOConfig(**base, **kw)


def test_ppo_with_a_reward_model_applies_its_normalisation_and_the_eos_trick(tmp_path):
    from cai.train.ppo_config import RewardConfig
    cfg = _short_run(tmp_path, reward=RewardConfig(kind="rm", model=str(_tiny_rm(tmp_path / "rm"))),
                     ppo=PPOHyper(epochs=1, num_minibatches=1, no_eos_score=-3.0),
                     monitor=MonitorConfig(sample_every=1, samples=2))
    out = train_ppo(cfg)
    m = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    # no response of the random model ends in EOS within 4 tokens: every score is the fixed −3
    assert m["length/no_eos_frac"] == 1.0 and m["length/limit_frac"] == 1.0 and m["reward/score"] == -3.0
    # the raw RM score is logged next to it, and the normalised one (2·raw − 1) is what the EOS trick replaced
    assert math.isfinite(m["reward/raw"]) and m["reward/raw"] != -3.0
    assert [json.loads(x)["score"] for x in (out / "samples.jsonl").read_text().splitlines()] == [-3.0, -3.0]


def test_rloo_with_a_d_rlaif_judge_reward(tmp_path):
    from cai.train.ppo_config import RewardConfig
    cfg = _short_run(tmp_path, algorithm="rloo",
                     reward=RewardConfig(kind="judge", model=str(make_tiny_model()), constitution="harmless"),
                     ppo=PPOHyper(rloo_k=2, epochs=1, num_minibatches=1, penalize_no_eos=False),
                     monitor=MonitorConfig(sample_every=1, samples=4))
    out = train_ppo(cfg)
    m = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert m["reward/failures"] == 0 and m["loss/value"] == 0.0  # RLOO: no value model
    # each reward is the judge's d-RLAIF score of that (prompt, response), as `score_responses` gives it
    from cai.constitution import load_constitution
    from cai.engine.hf_engine import HFEngine
    from cai.feedback.score import score_responses
    rows = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    again = score_responses(HFEngine(str(make_tiny_model()), dtype="float32"), load_constitution("harmless"),
                            [r["prompt"] for r in rows], [r["response"] for r in rows])
    assert len(rows) == 4 and all(a.ok and abs(r["score"] - a.value) < 1e-4 for r, a in zip(rows, again)), (rows, again)
    assert m["tokens"] == 2 * 2 * 4  # 2 prompts × K=2 samples × 4 tokens
    from transformers import AutoModelForCausalLM
    AutoModelForCausalLM.from_pretrained(out)
