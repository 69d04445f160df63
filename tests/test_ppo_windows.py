"""PPO/RLOO forwards cut to each micro-batch's window (`ppo.window`, `ppo.by_length`): old, reference and
raw log-probs, entropies and values equal the full-width (B, P+R) forward of the whole rollout batch within
1e-5 on a tiny random Llama, with prompts and responses of different lengths in one batch."""
from types import SimpleNamespace

import pytest
import torch

from cai.testing import make_tiny_model
from cai.train import forward, ppo
from cai.train.rollout import Batch


@pytest.fixture(scope="module")
def models():
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    tiny = make_tiny_model()
    torch.manual_seed(0)
    policy = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32)
    with torch.no_grad():  # a reference that differs from the policy
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    value = AutoModelForSequenceClassification.from_pretrained(tiny, num_labels=1, dtype=torch.float32)
    value.config.pad_token_id = 0
    return forward.PolicyValue(policy, value), ref


def _batch(prompts: list[int], responses: list[int]) -> Batch:
    """Left-padded prompts and right-padded responses of the given lengths (pad id 0)."""
    g = torch.Generator().manual_seed(1)
    P, R, B = max(prompts), max(responses), len(prompts)
    ids = torch.zeros(B, P + R, dtype=torch.long)
    am = torch.zeros(B, P + R, dtype=torch.long)
    mask = torch.zeros(B, R, dtype=torch.long)
    for b, (p, r) in enumerate(zip(prompts, responses)):
        ids[b, P - p:P + r] = torch.randint(3, 1000, (p + r,), generator=g)
        am[b, P - p:P + r] = 1
        mask[b, :r] = 1
    return Batch(list(range(B)), ids, am, ids[:, P:], mask, torch.ones(B, dtype=torch.bool), torch.zeros(B, R),
                 [""] * B, P)


def test_window_cuts_only_all_padding_columns():
    b = _batch([3, 5, 2], [4, 1, 2])
    ids, am, P, r = ppo.window(b, torch.tensor([0, 2]))
    assert (P, r) == (3, 4) and ids.shape == (2, 7)  # longest prompt 3 of 5 columns, longest response 4
    assert am.tolist() == [[1, 1, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 0, 0]]
    assert [c.tolist() for c in ppo.by_length(b, torch.arange(3), 2)] == [[0, 2], [1]]


def test_windowed_rollout_forwards_match_the_full_width_batch(models):
    module, ref = models
    b = _batch([7, 3, 12, 5, 9], [6, 15, 2, 9, 1])
    P, R, T = b.P, b.response_ids.size(1), 0.7
    cfg = SimpleNamespace(rollout=SimpleNamespace(temperature=T), run=SimpleNamespace(micro_batch_size=2))
    old, ent, raw, val, ref_lp = ppo._rollout_forwards(SimpleNamespace(device="cpu"), module, ref, b, cfg)
    with torch.no_grad():
        f_old, f_ent, f_raw, f_val = module(b.input_ids, b.attention_mask, P, R, T, with_entropy=True)
        f_ref = forward.policy_logps(ref, b.input_ids, b.attention_mask, P, R, T)[0]
    m = b.mask.float()
    for got, want in ((old, f_old), (ent, f_ent), (raw, f_raw), (val, f_val), (ref_lp, f_ref)):
        assert got.shape == (5, R)
        assert torch.allclose(got, want * m, atol=1e-5, rtol=0), (got - want * m).abs().max()
    assert (old[0, 6:] == 0).all() and old[0, :6].abs().min() > 0
