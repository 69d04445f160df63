"""Padding-free packed batches (`cai.train.packing`) against the padded path on a tiny random Llama, fp32:
log-probs, rewards and every parameter's gradient within 1e-5, with and without LoRA, with the prompt of
a pair shared; then each trainer's losses over steps (so after updates) with `run.tokens_per_batch` set
against the padded trainer's."""
import json
import random

import pytest
import torch

from cai.errors import InputError
from cai.testing import make_prefs_dataset, make_sft_dataset, make_tiny_model
from cai.train import batching, forward, losses, packing
from cai.train.data import PrefExample, SFTExample

TOL = 1e-5


@pytest.fixture(scope="module")
def tiny():
    return str(make_tiny_model())


def _lm(path, lora=False):
    from transformers import AutoModelForCausalLM
    torch.manual_seed(0)
    m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    if lora:
        from peft import LoraConfig, get_peft_model
        m = get_peft_model(m, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
        for n, p in m.named_parameters():  # a fresh adapter has B = 0: give it weight so it changes the outputs
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.05)
    return m


def _rm(path):
    from transformers import AutoModelForSequenceClassification
    torch.manual_seed(0)
    m = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32)
    m.config.pad_token_id = 0
    return m


def _pairs(vocab: int, seed: int = 0) -> list[PrefExample]:
    """Pairs of varied lengths; one whose responses start alike (the shared prefix runs into them) and
    one whose chosen response is a prefix of the rejected one."""
    rng = random.Random(seed)
    seq = lambda n: [rng.randrange(3, vocab) for _ in range(n)]  # noqa: E731
    out = []
    for k in range(5):
        p, c, r = seq(rng.randint(3, 12)), seq(rng.randint(2, 9)), seq(rng.randint(2, 9))
        if k == 1:
            r = c[:2] + r
        if k == 3:
            r = c + r
        out.append(PrefExample(p + c, [0] * len(p) + [1] * len(c), p + r, [0] * len(p) + [1] * len(r)))
    return out


def _grads(model) -> dict:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_grads_close(a: dict, b: dict):
    assert a.keys() == b.keys() and a
    for n in a:
        assert torch.allclose(a[n], b[n], atol=TOL, rtol=0), (n, (a[n] - b[n]).abs().max())


# ---- layout ------------------------------------------------------------------------------------------


def test_shared_prefix_is_the_common_start_capped_to_leave_each_response_a_token():
    ex = lambda c, r: PrefExample(c, [1] * len(c), r, [1] * len(r))  # noqa: E731
    assert packing.shared_prefix(ex([1, 2, 3, 4], [1, 2, 9])) == 2
    assert packing.shared_prefix(ex([1, 2], [1, 2, 5, 6])) == 1  # chosen is a prefix: its last token stays its own
    assert packing.shared_prefix(ex([7, 2], [1, 2])) == 0
    assert packing.pair_tokens(ex([1, 2, 3, 4], [1, 2, 9])) == 4 + 3 - 2


def test_pack_pairs_layout_positions_and_scored_tokens():
    # prompt [10, 11], chosen [20, 21], rejected [30]
    p = packing.pack_pairs([PrefExample([10, 11, 20, 21], [0, 0, 1, 1], [10, 11, 30], [0, 0, 1])])
    assert p.input_ids.tolist() == [[10, 11, 20, 21, 30]]
    assert p.position_ids.tolist() == [[0, 1, 2, 3, 2]]  # rejected continues from the prompt's end
    assert p.blocks == [packing.Block(0, 4, ((0, 4),)), packing.Block(4, 5, ((0, 2), (4, 5)), prefix=2)]
    # chosen's tokens are predicted at 1 and 2; rejected's first token also at the prompt's last (1)
    assert p.src.tolist() == [1, 2, 1] and p.tgt.tolist() == [20, 21, 30] and p.row.tolist() == [0, 0, 1]
    assert p.last.tolist() == [3, 4] and p.real_tokens == 7


def test_token_micro_batches_respect_the_budget_and_split_processes_evenly():
    tokens = [5, 9, 3, 7, 4, 8, 2, 6]
    idx = list(range(8))
    for rank in (0, 1):
        mbs = packing.token_micro_batches(idx, tokens, rank, 2, 12)
        flat = [i for mb in mbs for i in mb]
        assert sorted(flat) == idx[rank * 4:(rank + 1) * 4]
        assert all(sum(tokens[i] for i in mb) <= 12 for mb in mbs)
    # rank 0 holds 0..3 (5, 9, 3, 7): sorted 3, 5, 7, 9 -> [3+5], [7], [9]
    assert packing.token_micro_batches(idx, tokens, 0, 2, 12) == [[2, 0], [3], [1]]
    assert packing.token_micro_batches([0, 1], [20, 30], 0, 1, 10) == [[0], [1]]  # over-long: alone
    with pytest.raises(InputError):
        packing.token_micro_batches(idx[:3], tokens, 0, 2, 12)


# ---- forward parity ------------------------------------------------------------------------------------


def test_packed_examples_do_not_see_each_other(tiny):
    mod = forward.CompletionLogps(_lm(tiny))
    exs = [SFTExample([5, 6, 7, 8, 9], [0, 0, 1, 1, 1]), SFTExample([11, 12, 13], [0, 1, 1])]
    other = [SFTExample([40, 41, 42, 43, 44], [0, 0, 1, 1, 1]), exs[1]]
    with torch.no_grad():
        a, _ = mod(packed=packing.pack_sft(exs))
        b, _ = mod(packed=packing.pack_sft(other))
    assert a[1] == b[1] and a[0] != b[0]


@pytest.mark.parametrize("lora,checkpointing", [(False, False), (True, False), (False, True)],
                         ids=["full", "lora", "checkpointing"])
def test_sft_packed_matches_padded(tiny, lora, checkpointing):
    """Token-mean NLL and every trainable gradient of a padded micro-batch and of one packed row (also with
    gradient checkpointing, whose recomputation must see the same blocks)."""
    rng = random.Random(1)
    exs = []
    for n in (7, 19, 4, 12):
        ids = [rng.randrange(3, 1000) for _ in range(n)]
        exs.append(SFTExample(ids, [0] * (n // 2) + [1] * (n - n // 2)))
    res = []
    for packed in (False, True):
        model = _lm(tiny, lora)
        if checkpointing:
            model.gradient_checkpointing_enable()
            model.train()  # transformers recomputes only in training mode
        mod = forward.CompletionLogps(model)
        if packed:
            logps, n_tok = mod(packed=packing.pack_sft(exs))
        else:
            b = batching.collate_sft(exs, 0)
            logps, n_tok = mod(b["input_ids"], b["attention_mask"], b["completion_mask"])
        loss = losses.sft_token_nll(logps).sum() / n_tok.sum()
        loss.backward()
        res.append((logps.detach(), n_tok, loss.item(), _grads(model)))
    (lp0, n0, l0, g0), (lp1, n1, l1, g1) = res
    assert n0.tolist() == n1.tolist() == [4, 10, 2, 6]
    assert torch.allclose(lp0 / n0, lp1 / n1, atol=TOL, rtol=0) and abs(l0 - l1) < TOL
    _assert_grads_close(g0, g1)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_dpo_prompt_sharing_matches_unshared_logps_and_grads(tiny, lora):
    """Chosen/rejected log-probs of pairs packed with their prompt run once equal the padded (2B, T)
    batch's, and so do the DPO loss and its gradients."""
    exs = _pairs(1000)
    ref_c, ref_r = torch.linspace(-60, -20, 5), torch.linspace(-50, -30, 5)
    res = []
    for packed in (False, True):
        model = _lm(tiny, lora)
        mod = forward.CompletionLogps(model)
        if packed:
            logps, n_tok = mod(packed=packing.pack_pairs(exs))
        else:
            b = batching.collate_pairs(exs, 0)
            logps, n_tok = mod(b["input_ids"], b["attention_mask"], b["completion_mask"])
        c, r = logps.chunk(2)
        loss = losses.DPO_LOSSES["sigmoid"](c - ref_c, r - ref_r, 0.1, 0.0).mean()
        loss.backward()
        res.append((logps.detach(), n_tok, _grads(model), loss.item()))
    assert res[0][1].tolist() == res[1][1].tolist()
    # per-token log-probs within 1e-5 (a sum of ~20 fp32 log-probs near -100 is itself only good to ~1e-5)
    n = res[0][1]
    assert torch.allclose(res[0][0] / n, res[1][0] / n, atol=TOL, rtol=0), (res[0][0] - res[1][0]).abs().max()
    assert abs(res[0][3] - res[1][3]) < TOL
    _assert_grads_close(res[0][2], res[1][2])


def test_rm_padding_free_prompt_sharing_matches_padded_rewards_and_grads(tiny):
    """Rewards read at each response's last token of a packed, prompt-shared row equal the padded
    batch's (read at the last real token), and so do the Bradley-Terry loss's gradients."""
    exs = _pairs(1000, seed=2)
    res = []
    for packed in (False, True):
        model = _rm(tiny)
        mod = forward.LastTokenReward(model)
        if packed:
            rewards = mod(packed=packing.pack_pairs(exs))
        else:
            b = batching.collate_pairs(exs, 0)
            rewards = mod(b["input_ids"], b["attention_mask"])
        rc, rr = rewards.chunk(2)
        losses.bradley_terry_loss(rc, rr, torch.full((5,), 0.8), torch.zeros(5)).mean().backward()
        res.append((rewards.detach(), _grads(model)))
    assert torch.allclose(res[0][0], res[1][0], atol=TOL, rtol=0)
    _assert_grads_close(res[0][1], res[1][1])


# ---- trainers: packed runs follow the padded runs step for step ------------------------------------------


def _losses(out, key="loss") -> list[float]:
    return [r[key] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if key in r]


def _run(tiny, tmp_path, name, tokens_per_batch, **extra):
    from cai.train import OptimConfig, RunConfig
    return {"model": tiny, "run": RunConfig(output_dir=str(tmp_path / name), max_steps=3, batch_size=4,
                                            micro_batch_size=2, tokens_per_batch=tokens_per_batch,
                                            progress=False, save_every=0),
            "optim": OptimConfig(lr=1e-3), **extra}


def test_sft_trainer_packed_matches_padded(tiny, tmp_path):
    from cai.train import DataConfig, SFTConfig, train_sft
    d = DataConfig(path=str(make_sft_dataset(tmp_path / "sft", 12)), eval_fraction=0.25)
    padded = train_sft(SFTConfig(data=d, **_run(tiny, tmp_path, "pad", 0)))
    packed = train_sft(SFTConfig(data=d, **_run(tiny, tmp_path, "pack", 160)))
    a, b = _losses(padded), _losses(packed)
    assert len(a) == 3 and a[2] != a[0] and a == pytest.approx(b, abs=TOL)
    assert _losses(padded, "eval/loss") == pytest.approx(_losses(packed, "eval/loss"), abs=TOL)
    assert _losses(padded, "tokens") == _losses(packed, "tokens")


def test_rm_trainer_padding_free_matches_padded(tiny, tmp_path):
    from cai.train import DataConfig, RMConfig, train_rm
    d = DataConfig(path=str(make_prefs_dataset(tmp_path / "prefs", 10)), eval_fraction=0.2)
    padded = train_rm(RMConfig(data=d, **_run(tiny, tmp_path, "pad", 0)))
    packed = train_rm(RMConfig(data=d, **_run(tiny, tmp_path, "pack", 200)))
    a, b = _losses(padded), _losses(packed)
    assert len(a) == 3 and a[2] != a[0] and a == pytest.approx(b, abs=TOL)
    assert _losses(padded, "eval/accuracy") == _losses(packed, "eval/accuracy")
    # the reported tokens are the unshared sequences' on both paths (comparable throughput)
    assert _losses(padded, "tokens") == _losses(packed, "tokens")


def test_dpo_trainer_prompt_sharing_matches_padded(tiny, tmp_path):
    from cai.train import DataConfig, DPOConfig, LoraConfig, train_dpo
    d = DataConfig(path=str(make_prefs_dataset(tmp_path / "prefs", 10)), eval_fraction=0.2)
    for lora in (LoraConfig(), LoraConfig(r=4, alpha=8)):
        tag = f"r{lora.r}"
        padded = train_dpo(DPOConfig(data=d, lora=lora, ref_cache_dir=str(tmp_path / f"ref-pad-{tag}"),
                                     **_run(tiny, tmp_path, f"pad-{tag}", 0)))
        packed = train_dpo(DPOConfig(data=d, lora=lora, ref_cache_dir=str(tmp_path / f"ref-pack-{tag}"),
                                     **_run(tiny, tmp_path, f"pack-{tag}", 200)))
        for key in ("loss", "rewards/margin", "eval/loss"):
            assert _losses(padded, key) == pytest.approx(_losses(packed, key), abs=TOL), (tag, key)
        # summed log-probs near -260: fp32 holds them to ~1e-7 relative
        assert _losses(padded, "logps/chosen") == pytest.approx(_losses(packed, "logps/chosen"), rel=1e-6)
        assert _losses(padded)[2] != _losses(padded)[0]


def test_sft_refuses_both_packings():
    from cai.train import RunConfig, SFTConfig
    with pytest.raises(InputError) as e:
        SFTConfig(packing=True, run=RunConfig(tokens_per_batch=512))
    assert e.value.field == "packing"
    with pytest.raises(InputError):
        RunConfig(tokens_per_batch=-1)
