"""Parity with TRL 1.16 (a dev dependency, used only here) on the same tiny model and batch.

DPO: cai's sigmoid loss and mean chosen/rejected implicit rewards equal DPOTrainer's within 1e-4 (also
IPO and robust), with a reference model that differs from the policy so the numbers are not trivial.
RM: cai's Bradley-Terry loss equals RewardTrainer's within 1e-4. Tokenisation (including truncation at
max_length) matches TRL's token for token.
"""
import pyarrow.parquet as pq
import pytest
import torch
import trl

from cai.testing import make_prefs_dataset, make_tiny_model
from cai.train import batching, common, data, forward, losses

MAX_LEN = 60  # the SmolLM2 system prompt alone is ~30 tokens: some pairs get truncated


def _rows(tmp_path, n=8):
    d = make_prefs_dataset(tmp_path / "prefs", n, soft=False)
    return pq.read_table(d / "prefs" / "train-00000-of-00001.parquet").to_pylist()


@pytest.fixture(scope="module")
def models():
    return make_tiny_model(seed=0), make_tiny_model(seed=1)


def test_dpo_matches_trl(tmp_path, models):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    pol_path, ref_path = models
    rows = _rows(tmp_path)
    ds = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])
    tok = AutoTokenizer.from_pretrained(pol_path)
    args = trl.DPOConfig(output_dir=str(tmp_path / "trl"), beta=0.1, max_length=MAX_LEN, report_to=[], bf16=False,
                         use_cpu=True, per_device_train_batch_size=4)
    tr = trl.DPOTrainer(model=AutoModelForCausalLM.from_pretrained(pol_path),
                        ref_model=AutoModelForCausalLM.from_pretrained(ref_path), args=args, train_dataset=ds,
                        processing_class=tok)
    tr.model.train()
    trl_batch = tr.data_collator([tr.train_dataset[i] for i in range(4)])

    # cai: own tokenisation, collation, log-probs (reference: the seed-1 model)
    counts = data.Counts()
    exs = [data.tokenize_pair_dpo(tok, r, MAX_LEN, "keep_start", counts) for r in rows[:4]]
    assert counts.truncated > 0
    batch = batching.collate_pairs(exs, tok.pad_token_id)
    width = trl_batch["input_ids"].size(1)
    assert torch.equal(batch["input_ids"][:, :width], trl_batch["input_ids"])
    assert torch.equal(batch["completion_mask"][:, :width], trl_batch["completion_mask"])
    policy = forward.CompletionLogps(common.load_causal_lm(pol_path, "float32"))
    ref = forward.CompletionLogps(common.load_causal_lm(ref_path, "float32"))
    with torch.no_grad():
        logps, n_tok = policy(batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
        ref_logps, _ = ref(batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    c_ratio, r_ratio = (logps - ref_logps).chunk(2)
    len_c, len_r = n_tok.chunk(2)

    for loss_type, eps in (("sigmoid", 0.0), ("ipo", 0.0), ("robust", 0.2)):
        tr.loss_types, tr.label_smoothing = [loss_type], eps
        tr._metrics["train"].clear()
        with torch.no_grad():
            trl_loss = tr.compute_loss(tr.model, dict(trl_batch)).item()
        m = tr._metrics["train"]
        ours = losses.DPO_LOSSES[loss_type](c_ratio, r_ratio, 0.1, eps, chosen_len=len_c, rejected_len=len_r)
        assert ours.mean().item() == pytest.approx(trl_loss, abs=1e-4), loss_type
        rc, rr = losses.dpo_implicit_rewards(c_ratio, r_ratio, 0.1)
        assert rc.mean().item() == pytest.approx(m["rewards/chosen"][-1], abs=1e-4)
        assert rr.mean().item() == pytest.approx(m["rewards/rejected"][-1], abs=1e-4)
        assert abs(rc.mean().item()) > 1e-3  # a non-trivial reference
        lc, _ = logps.chunk(2)
        assert lc.mean().item() == pytest.approx(m["logps/chosen"][-1], abs=1e-3)


def test_reward_model_matches_trl(tmp_path, models):
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from cai.train.rm import load_reward_model
    rows = _rows(tmp_path)
    tok = AutoTokenizer.from_pretrained(models[0])
    torch.manual_seed(0)
    rm_dir = tmp_path / "rm-init"
    load_reward_model(models[0], "float32", tok.pad_token_id).save_pretrained(rm_dir)
    tok.save_pretrained(rm_dir)
    ds = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])
    args = trl.RewardConfig(output_dir=str(tmp_path / "trl"), max_length=200, report_to=[], bf16=False, use_cpu=True,
                            per_device_train_batch_size=4)
    trl_model = AutoModelForSequenceClassification.from_pretrained(rm_dir, num_labels=1)
    tr = trl.RewardTrainer(model=trl_model, args=args, train_dataset=ds, processing_class=tok)
    tr.model.train()
    trl_batch = tr.data_collator([tr.train_dataset[i] for i in range(4)])
    with torch.no_grad():
        trl_loss = tr.compute_loss(tr.model, dict(trl_batch)).item()

    exs = [data.tokenize_pair_rm(tok, r, 200, data.Counts()) for r in rows[:4]]
    batch = batching.collate_pairs(exs, tok.pad_token_id)
    assert torch.equal(batch["input_ids"][:, :trl_batch["input_ids"].size(1)], trl_batch["input_ids"])
    module = forward.LastTokenReward(load_reward_model(rm_dir, "float32", tok.pad_token_id))
    with torch.no_grad():
        rc, rr = module(batch["input_ids"], batch["attention_mask"]).chunk(2)
    ours = losses.bradley_terry_loss(rc, rr).mean().item()
    assert ours == pytest.approx(trl_loss, abs=1e-4)
    assert abs(ours - 0.6931) > 1e-3  # the random head gives a non-trivial loss
    # soft labels with p = 1 are the hard loss
    assert losses.bradley_terry_loss(rc, rr, torch.ones(4)).mean().item() == pytest.approx(ours, abs=1e-7)
