"""`policy_weights`: the (name, tensor) pairs an engine loads. A LoRA adapter is merged from the state's
A and B, equal to peft's own `merge_and_unload`; a full state dict passed in (what a sharded trainer
gathers) is what is read, not the model's own (sharded) tensors."""
import torch

from cai.engine.weight_sync import policy_weights
from cai.testing import make_tiny_model
from cai.train import common
from cai.train.config import LoraConfig
from cai.train.lora import apply_lora


def _trained_lora():
    lora = apply_lora(common.load_causal_lm(make_tiny_model(), "float32"),
                      LoraConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj"]), None)
    with torch.no_grad():  # a trained adapter: B != 0
        for n, p in lora.named_parameters():
            if "lora_B" in n:
                p.add_(0.5 * torch.randn_like(p))
    return lora


def make_base():
    return common.load_causal_lm(make_tiny_model(), "float32").state_dict()


def test_lora_merges_as_peft_does():
    lora = _trained_lora()
    got = dict(policy_weights(lora))
    want = lora.merge_and_unload().state_dict()  # peft's merge, computed by its own layers
    assert got.keys() == want.keys()
    for k in want:
        assert torch.allclose(got[k], want[k], atol=1e-6), k
    assert not torch.equal(got["model.layers.0.self_attn.q_proj.weight"],
                           make_base()["model.layers.0.self_attn.q_proj.weight"])  # the delta is in


def test_a_given_full_state_is_what_is_read():
    lora = _trained_lora()
    state = {k: v.clone() for k, v in lora.state_dict().items()}
    a = "base_model.model.model.layers.1.self_attn.v_proj.lora_A.default.weight"
    state[a] = state[a] * 2  # doubles that layer's delta: ΔW = B·(2A)·alpha/r
    w = "base_model.model.model.layers.1.self_attn.v_proj.base_layer.weight"
    state["base_model.model.model.norm.weight"] = torch.full_like(state["base_model.model.model.norm.weight"], 3.0)
    got = dict(policy_weights(lora, state))
    mod = lora.get_base_model().model.layers[1].self_attn.v_proj
    B = state[a.replace("lora_A", "lora_B")]
    assert torch.allclose(got["model.layers.1.self_attn.v_proj.weight"], state[w] + (B @ state[a]) * (8 / 4),
                          atol=1e-6)
    assert mod.scaling["default"] == 8 / 4
    assert torch.equal(got["model.norm.weight"], torch.full_like(got["model.norm.weight"], 3.0))


def test_a_reward_head_trained_whole_is_saved_as_the_head():
    """The reward model's LoRA keeps its `score` head whole (peft `modules_to_save`): the merged weights name
    it `score.weight` with the trained values, as `merge_and_unload` does, not the frozen original beside it."""
    from transformers import AutoModelForSequenceClassification
    head = AutoModelForSequenceClassification.from_pretrained(str(make_tiny_model()), num_labels=1,
                                                              dtype=torch.float32)
    rm = apply_lora(head, LoraConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj"]), None, task="SEQ_CLS",
                    modules_to_save=["score"])
    with torch.no_grad():
        for n, p in rm.named_parameters():
            if "lora_B" in n or "modules_to_save" in n:
                p.add_(0.5 * torch.randn_like(p))
    trained_head = rm.base_model.model.score.modules_to_save["default"].weight.clone()
    got = dict(policy_weights(rm))
    want = rm.merge_and_unload().state_dict()
    assert got.keys() == want.keys() and torch.equal(got["score.weight"], trained_head)
    for k in want:
        assert torch.allclose(got[k], want[k], atol=1e-6), k
