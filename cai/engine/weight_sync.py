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


def policy_weights(model, state: dict | None = None) -> list[tuple[str, object]]:
    """(checkpoint name, tensor) pairs of the model's weights, LoRA deltas merged in. Names are those of
    `save_pretrained` (`model.layers.0.self_attn.q_proj.weight`), which is what both engines load.

    `state` is the model's full state dict when the model itself holds only a shard of it (FSDP2 DTensors,
    ZeRO-3 placeholders; `cai.train.distributed.full_state_dict` gathers it); default `model.state_dict()`.
    The LoRA delta is read from the same state, ΔW = B·A·(alpha/r) (Hu et al. 2021, eq. 3 and §4.1; peft's
    `Linear.get_delta_weight`), so a sharded adapter merges exactly as an unsharded one."""
    import torch
    from peft import PeftModel
    from peft.tuners.lora import Linear as LoraLinear
    from peft.tuners.lora import LoraLayer
    with torch.no_grad():
        if state is None:
            state = model.state_dict()
        if not isinstance(model, PeftModel):
            return [(k, v.detach()) for k, v in state.items()]
        prefix = "base_model.model."  # a PeftModel's state names the transformers model's weights under it
        deltas = {}
        for name, mod in model.get_base_model().named_modules():
            if not isinstance(mod, LoraLayer) or not mod.active_adapters:
                continue
            if not isinstance(mod, LoraLinear) or any(mod.use_dora.get(a) for a in mod.active_adapters):
                raise ValueError(f"cannot merge LoRA layer {name} ({type(mod).__name__}): Linear, no DoRA")
            delta = 0
            for a in mod.active_adapters:
                A, B = state[f"{prefix}{name}.lora_A.{a}.weight"], state[f"{prefix}{name}.lora_B.{a}.weight"]
                ab = B.float() @ A.float()  # (out, in)
                delta = delta + (ab.T if mod.fan_in_fan_out else ab) * mod.scaling[a]
            deltas[name] = delta
        out = []
        for k, v in state.items():
            k = k.removeprefix(prefix)
            if ".lora_" in k or ".original_module." in k:  # a module peft trains whole (modules_to_save, e.g.
                continue                                    # a reward head) keeps its frozen original beside it
            for a in model.active_adapters:
                k = k.replace(f".modules_to_save.{a}.", ".")
            if ".base_layer." in k:
                owner = k.split(".base_layer.")[0]
                if k.endswith(".weight") and owner in deltas:
                    v = v + deltas[owner].to(v.dtype)
                k = k.replace(".base_layer.", ".")
            out.append((k, v.detach()))
        return out


def sync_weights(engine, model, state: dict | None = None) -> float:
    """Load `model`'s weights (its full `state` when it is sharded, see `policy_weights`) into `engine` (a
    `WeightSync`); returns the seconds it took."""
    t0 = time.perf_counter()
    if not isinstance(engine, WeightSync):
        raise ValueError(f"engine {engine.name!r} cannot receive weights (use vllm or hf for rollouts)")
    engine.load_weights(policy_weights(model, state))
    return time.perf_counter() - t0
