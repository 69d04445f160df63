"""A tiny random Llama with the SmolLM2 tokenizer and chat template.

2 layers, hidden 128, 2 heads (head_dim 64: vLLM's CPU attention rejects 16). It starts in vLLM in a
few seconds and trains in milliseconds, so most tests use it; a few integration tests use real SmolLM2.
"""
from __future__ import annotations

import os
from pathlib import Path

from cai.models import DEFAULT_MODEL, cache_dir, file_lock, resolve_model

TINY_NAME = "tiny-llama-smollm2-tok"


def make_tiny_model(out: str | os.PathLike | None = None, *, seed: int = 0, layers: int = 2, hidden: int = 128,
                    heads: int = 2, max_positions: int = 2048) -> Path:
    """Build (once) and return an HF directory with a random tiny Llama and SmolLM2's tokenizer."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    out = Path(out) if out else cache_dir() / "models" / f"{TINY_NAME}-s{seed}-l{layers}-h{hidden}"
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(out.parent / f".{out.name}.lock"):
        if (out / "model.safetensors").is_file():
            return out
        tok = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_MODEL))
        config = LlamaConfig(
            vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
            num_attention_heads=heads, num_key_value_heads=heads, head_dim=hidden // heads,
            max_position_embeddings=max_positions, tie_word_embeddings=True,
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        )
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).to(torch.float32)
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id).save_pretrained(tmp)
        os.replace(tmp, out)
    return out
