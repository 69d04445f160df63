"""Push a policy's current weights into a rollout engine: the "sync" step of PPO/RLOO.

`sync_weights(engine, model)` takes a transformers causal LM (or a peft LoRA wrapper of one) and makes the
engine sample from exactly those weights:
  - vLLM (in-process engine, `VLLMEngine.load_weights`): `collective_rpc("reload_weights", weights_iterator=...)`
    loads the tensors in place under their checkpoint names, then the prefix cache is reset (its KV blocks
    were computed with the old weights). vLLM 0.32: `vllm/v1/worker/gpu_model_runner.py::reload_weights`.
  - transformers engine (`HFEngine.load_weights`): `load_state_dict` into the engine's own copy of the model.
Both implement the `WeightSync` protocol of `cai.engine.base`.
A LoRA policy is synced merged (W + scale·BA computed per layer, without touching the trained weights), so
the engine needs no LoRA support and serves what `cai train merge` would export.
"""
from __future__ import annotations

import time

from cai.engine.base import WeightSync


def policy_weights(model) -> list[tuple[str, object]]:
    """(checkpoint name, tensor) pairs of the model's weights, LoRA deltas merged in. Names are those of
    `save_pretrained` (`model.layers.0.self_attn.q_proj.weight`), which is what both engines load."""
    import torch
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer
    with torch.no_grad():
        if not isinstance(model, PeftModel):
            return [(k, v.detach()) for k, v in model.state_dict().items()]
        inner = model.get_base_model()
        deltas = {name: sum(mod.get_delta_weight(a) for a in mod.active_adapters)
                  for name, mod in inner.named_modules() if isinstance(mod, LoraLayer) and mod.active_adapters}
        out = []
        for k, v in inner.state_dict().items():
            if ".lora_" in k:
                continue
            if ".base_layer." in k:
                owner = k.split(".base_layer.")[0]
                if k.endswith(".weight") and owner in deltas:
                    v = v + deltas[owner].to(v.dtype)
                k = k.replace(".base_layer.", ".")
            out.append((k, v.detach()))
        return out


def sync_weights(engine, model) -> float:
    """Load `model`'s weights into `engine` (a `WeightSync`); returns the seconds it took."""
    t0 = time.perf_counter()
    if not isinstance(engine, WeightSync):
        raise ValueError(f"engine {engine.name!r} cannot receive weights (use vllm or hf for rollouts)")
    engine.load_weights(policy_weights(model))
    return time.perf_counter() - t0
