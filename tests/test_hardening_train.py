"""Soft labels in training, with numbers: a policy that differs from its reference (so h != 0 and the loss
depends on ε), per-pair ε = 1 − p_chosen for cDPO, one dataset-wide ε = mean(1 − p_chosen) for robust
DPO, soft targets and per-row margins (hard labels only) for the reward model. Each is checked against a hand computation from independent forwards, the DPO trainer's
logged step-1 loss end to end, and TRL where TRL has the variant (cDPO as `sigmoid` with label smoothing,
robust DPO). Also: the final model is published atomically."""
from __future__ import annotations

import json
import math

import pytest
import torch

from cai.errors import InputError
from cai.testing import make_tiny_model
from cai.train import checkpoints, common, data, dpo, forward, metrics, rm
from cai.train.config import DataConfig, DPOConfig, OptimConfig, RMConfig, RunConfig

BETA = 0.1
ROWS = [{"prompt": "Can you tell me about owls?", "chosen": "Owls are nocturnal birds of prey.",
         "rejected": "No. Look it up yourself.", "p_chosen": 0.9},
        {"prompt": "What is tea?", "chosen": "A drink brewed from the leaves of Camellia sinensis.",
         "rejected": "Whatever.", "p_chosen": 0.7}]


def nls(x: float) -> float:
    """−log σ(x), by hand."""
    return math.log1p(math.exp(-x))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return make_tiny_model(d / "policy", seed=3), make_tiny_model(d / "reference", seed=4)


@pytest.fixture(scope="module")
def tok(models):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(models[0])


def seq_logps(path, tok, rows) -> list[tuple[float, float]]:
    """(log π(chosen|x), log π(rejected|x)) per row from a plain transformers forward (no cai module)."""
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    out = []
    for r in rows:
        ex = data.tokenize_pair_dpo(tok, r, 1024, "keep_start", data.Counts())
        pair = []
        for ids, mask in ((ex.chosen_ids, ex.chosen_mask), (ex.rejected_ids, ex.rejected_mask)):
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)  # (T, V)
            pair.append(sum(logp[t - 1, ids[t]].item() for t in range(1, len(ids)) if mask[t]))
        out.append(tuple(pair))
    return out


def by_hand(models, tok, loss_type: str) -> list[float]:
    pol, ref = seq_logps(models[0], tok, ROWS), seq_logps(models[1], tok, ROWS)
    out = []
    for (pc, pr), (rc, rr), row in zip(pol, ref, ROWS):
        h = (pc - rc) - (pr - rr)
        assert abs(BETA * h) > 1e-3  # the policy is not its reference: ε matters
        if loss_type == "cdpo":
            eps = 1 - row["p_chosen"]  # cDPO: per pair
            out.append((1 - eps) * nls(BETA * h) + eps * nls(-BETA * h))
        else:
            eps = ((1 - 0.9) + (1 - 0.7)) / 2  # robust: one ε for the data set, mean(1 − p) = 0.2
            out.append(((1 - eps) * nls(BETA * h) - eps * nls(-BETA * h)) / (1 - 2 * eps))
    return out


def dpo_step1(models, tmp_path, **kw) -> dict:
    """Metrics of one DPO step (batch 2 = both ROWS, lr 1e-6) from models[0] against reference models[1]."""
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    cfg = DPOConfig(model=str(models[0]), ref_model=str(models[1]), beta=BETA,
                    data=DataConfig(path=str(path), eval_fraction=0.0),
                    run=RunConfig(output_dir=str(tmp_path / "run"), batch_size=2, micro_batch_size=1, max_steps=1,
                                  progress=False, save_every=0),
                    optim=OptimConfig(lr=1e-6), ref_cache_dir=str(tmp_path / "ref"), **kw)
    dpo.train(cfg)
    return metrics.read_metrics(tmp_path / "run" / "metrics.jsonl")[0]


@pytest.mark.parametrize("loss_type", ["cdpo", "robust"])
def test_dpo_step1_loss_on_soft_labels_by_hand(loss_type, models, tok, tmp_path):
    step1 = dpo_step1(models, tmp_path, loss_type=loss_type)
    want = by_hand(models, tok, loss_type)
    assert step1["loss"] == pytest.approx(sum(want) / 2, abs=1e-4)
    assert abs(step1["loss"] - math.log(2)) > 1e-3


def test_rpo_adds_alpha_times_the_chosen_per_token_nll(models, tok, tmp_path):
    """rpo_alpha: step-1 loss = cDPO on the soft labels + α · (−log π(chosen|x) / |chosen|), by hand."""
    step1 = dpo_step1(models, tmp_path, rpo_alpha=0.5)
    n_chosen = [sum(data.tokenize_pair_dpo(tok, r, 1024, "keep_start", data.Counts()).chosen_mask[1:]) for r in ROWS]
    nll = [-pc / n for (pc, _), n in zip(seq_logps(models[0], tok, ROWS), n_chosen)]
    want = [d + 0.5 * x for d, x in zip(by_hand(models, tok, "cdpo"), nll)]
    assert step1["nll/chosen"] == pytest.approx(sum(nll) / 2, abs=1e-4)
    assert step1["loss"] == pytest.approx(sum(want) / 2, abs=1e-4)
    with pytest.raises(InputError, match="rpo_alpha"):
        DPOConfig(rpo_alpha=-1.0)


def test_soft_robust_matches_trl_at_a_shared_p(models, tok, tmp_path):
    """With the same p_chosen on every pair, robust DPO's ε = mean(1 − p) = 0.2 is TRL's scalar label_smoothing."""
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    rows = [{**r, "p_chosen": 0.8} for r in ROWS]
    # conversational rows, so TRL applies the chat template as cai does with plain strings
    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}],
                             "chosen": [{"role": "assistant", "content": r["chosen"]}],
                             "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in rows])
    args = trl.DPOConfig(output_dir=str(tmp_path / "trl"), beta=BETA, max_length=1024, report_to=[], bf16=False,
                         use_cpu=True, per_device_train_batch_size=2)
    tr = trl.DPOTrainer(model=AutoModelForCausalLM.from_pretrained(models[0]),
                        ref_model=AutoModelForCausalLM.from_pretrained(models[1]), args=args, train_dataset=ds,
                        processing_class=tok)
    trl_batch = tr.data_collator([tr.train_dataset[i] for i in range(2)])
    exs = [data.tokenize_pair_dpo(tok, r, 1024, "keep_start", data.Counts()) for r in rows]
    policy = forward.CompletionLogps(common.load_causal_lm(models[0], "float32"))
    ref = seq_logps(models[1], tok, rows)
    ref_c = torch.tensor([c for c, _ in ref], dtype=torch.float32)  # (2,)
    ref_r = torch.tensor([r for _, r in ref], dtype=torch.float32)  # (2,)
    # TRL 1.16's "sigmoid" loss ignores label_smoothing, so cDPO has no TRL counterpart (it is checked by hand
    # above); robust DPO reads it, and the ε that `robust_epsilon: auto` estimates must equal TRL's here.
    cfg = DPOConfig(loss_type="robust", beta=BETA)
    eps = dpo.robust_epsilon(cfg, data.Prepared(exs, [], data.Counts(), {}), True)
    assert eps == pytest.approx(0.2)
    with torch.no_grad():
        ours = dpo.pair_losses(policy, exs, ref_c, ref_r, cfg, True, dpo.losses.DPO_LOSSES["robust"],
                               tok.pad_token_id, "cpu", robust_eps=eps)["loss"].mean().item()
    tr.loss_types, tr.label_smoothing = ["robust"], 0.2
    with torch.no_grad():
        theirs = tr.compute_loss(tr.model, dict(trl_batch)).item()
    assert ours == pytest.approx(theirs, abs=1e-4)
    assert abs(ours - math.log(2)) > 1e-3


def test_rm_soft_labels_and_per_row_margin_by_hand(models, tok):
    torch.manual_seed(0)
    module = forward.LastTokenReward(rm.load_reward_model(models[0], "float32", tok.pad_token_id))
    rows = [{**ROWS[0], "margin": 0.5}, {**ROWS[1]}]  # row 2 has no margin
    exs = [data.tokenize_pair_rm(tok, r, 1024, data.Counts()) for r in rows]
    with torch.no_grad():
        rewards = [module(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long)).item()
                   for e in exs for ids in (e.chosen_ids, e.rejected_ids)]
        # soft labels, no margin: −[p log σ(d) + (1 − p) log σ(−d)] per pair
        soft_rows = [data.tokenize_pair_rm(tok, r, 1024, data.Counts()) for r in ROWS]
        soft = rm.pair_losses(module, soft_rows, RMConfig(), True, tok.pad_token_id, "cpu")["loss"]
        want = [p * nls(rc - rr) + (1 - p) * nls(rr - rc)
                for (rc, rr), p in zip([rewards[0:2], rewards[2:4]], (0.9, 0.7))]
        assert soft.tolist() == pytest.approx(want, abs=1e-5)
        # a margin on soft-labelled pairs would move the optimum off logit(p): refused, not trained
        with pytest.raises(ValueError, match="margin is for hard labels"):
            rm.pair_losses(module, exs, RMConfig(margin=0.25), True, tok.pad_token_id, "cpu")
        # hard labels (p = 1) and config margin 0.25: row 1 uses its own margin column, row 2 the config's
        hard = rm.pair_losses(module, exs, RMConfig(margin=0.25), False, tok.pad_token_id, "cpu")["loss"]
    assert hard.tolist() == pytest.approx([nls(rewards[0] - rewards[1] - 0.5), nls(rewards[2] - rewards[3] - 0.25)],
                                          abs=1e-5)


def test_final_model_is_published_config_last(tmp_path, models, monkeypatch):
    """A kill between the weights and config.json leaves no loadable model (no config.json), never a
    half-written one that loads; the completed publish loads."""
    import os
    import shutil
    src, out = tmp_path / "tmp-final", tmp_path / "run"
    shutil.copytree(models[0], src)
    out.mkdir()
    (out / "config.json").write_text("{}")  # a previous run's model: removed before any new file lands
    moved = []
    real = os.replace

    def fake(a, b):
        moved.append(os.path.basename(b))
        if os.path.basename(b) == "config.json":
            raise KeyboardInterrupt  # "killed" right before the last rename
        real(a, b)

    monkeypatch.setattr(os, "replace", fake)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.publish(src, out)
    assert moved[-1] == "config.json" and (out / "model.safetensors").is_file() and not (out / "config.json").exists()
    monkeypatch.setattr(os, "replace", real)
    checkpoints.publish(src, out)
    from transformers import AutoModelForCausalLM
    assert AutoModelForCausalLM.from_pretrained(out) is not None and not src.exists()
