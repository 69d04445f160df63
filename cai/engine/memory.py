"""Memory of an engine on a machine without a GPU: what a job needs, what the machine has left, and what to
tell the user when the kernel's out-of-memory killer ends a process.

vLLM on CPU reserves its whole KV cache when it starts. The cache a job needs is its concurrent
sequences times their length times the model's KV bytes per token (Kwon et al. 2023, "Efficient Memory
Management for Large Language Model Serving with PagedAttention": 2 × layers × kv_heads × head_dim values
per token, stored in whole blocks). A stage sizes its engine from that need and from `MemAvailable`
(/proc/meminfo), never from a fixed share of RAM: two engines side by side each reserving 30% of a 24 GB
machine left too little for anything else.
"""
from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path
from typing import Any

from cai.errors import InputError

GiB = 2**30
DTYPE_BYTES = {"float32": 4, "float": 4, "bfloat16": 2, "float16": 2, "half": 2, "fp8": 1, "float8_e4m3fn": 1}
KV_HEADROOM = 1.2
"""Factor on the computed KV need: block rounding of prompts, prefix-cache blocks kept for reuse."""
ENGINE_OVERHEAD = int(1.5 * GiB)
"""Resident memory of an engine process besides its weights and KV cache (torch, vLLM, kernels, tokenizer)."""
RESERVE = GiB
"""Memory left to the rest of the machine when sizing an engine or deciding what runs side by side."""
DEFAULT_MAX_SEQS = 256
"""vLLM's default `max_num_seqs` for the offline `LLM` class: the concurrency assumed without a hint."""
MEM_CAP_ENV = "CAI_VLLM_CPU_MEM"
"""Environment variable: the largest share of RAM one engine's KV cache may take (default 0.3)."""


# ---- the model's side ---------------------------------------------------------------------------------------

def kv_bytes_per_token(config: dict[str, Any], dtype_bytes: int) -> int:
    """KV-cache bytes one token takes: layers × 2 (K and V) × kv_heads × head_dim × dtype bytes, from a
    Hugging Face `config.json` (`num_key_value_heads` defaults to the attention heads, `head_dim` to
    hidden_size / heads). SmolLM2-135M in bf16: 30 × 2 × 3 × 64 × 2 = 23,040 bytes."""
    cfg = config.get("text_config", config)  # multimodal configs nest the language model's
    heads = cfg["num_attention_heads"]
    kv_heads = cfg.get("num_key_value_heads") or heads
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
    return cfg["num_hidden_layers"] * 2 * kv_heads * head_dim * dtype_bytes


def weights_bytes(model_dir: str | Path, dtype_bytes: int) -> int:
    """Bytes of the model's weights once loaded in a dtype of `dtype_bytes`: the safetensors files' size
    rescaled from the dtype they are stored in (`config.json`'s `dtype` / `torch_dtype`)."""
    d = Path(model_dir)
    stored = sum(f.stat().st_size for f in d.glob("*.safetensors")) or sum(f.stat().st_size for f in d.glob("*.bin"))
    cfg = _config(d)
    stored_bytes = DTYPE_BYTES.get(str(cfg.get("dtype") or cfg.get("torch_dtype") or "float32"), 4)
    return stored * dtype_bytes // stored_bytes


def kv_cache_need(per_token: int, seq_len: int, seqs: int, *, block_size: int = 32,
                  headroom: float = KV_HEADROOM) -> int:
    """KV bytes for `seqs` concurrent sequences of up to `seq_len` tokens each, in whole blocks of
    `block_size` tokens, times `headroom`. At least one full sequence: vLLM refuses a smaller cache."""
    blocks = math.ceil(seq_len / block_size) * max(1, seqs)
    return int(blocks * block_size * per_token * headroom)


def model_need(model_dir: str | Path, dtype: str, seq_len: int, seqs: int, *, block_size: int = 32) -> dict[str, int]:
    """{weights, kv, total} bytes of one engine of this model (total adds `ENGINE_OVERHEAD`)."""
    nbytes = DTYPE_BYTES.get(dtype, 4)
    w = weights_bytes(model_dir, nbytes)
    kv = kv_cache_need(kv_bytes_per_token(_config(Path(model_dir)), nbytes), seq_len, seqs, block_size=block_size)
    return {"weights": w, "kv": kv, "total": w + kv + ENGINE_OVERHEAD}


def _config(d: Path) -> dict[str, Any]:
    try:
        return json.loads((d / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        raise InputError("not a model directory (no readable config.json)", file=d, field="model") from None


# ---- the machine's side -------------------------------------------------------------------------------------

def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo as {name: bytes} (its figures are in kB)."""
    out = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[name.strip()] = int(parts[0]) * (1024 if parts[1:2] == ["kB"] else 1)
    return out


def machine_memory(meminfo: str | None = None) -> tuple[int, int]:
    """(MemAvailable, MemTotal) in bytes, from /proc/meminfo (or its text); psutil where there is none."""
    if meminfo is None:
        try:
            meminfo = Path("/proc/meminfo").read_text()
        except OSError:  # not Linux
            import psutil
            vm = psutil.virtual_memory()
            return int(vm.available), int(vm.total)
    m = parse_meminfo(meminfo)
    return m.get("MemAvailable", m.get("MemFree", 0)), m.get("MemTotal", 0)


def size_kv_cache(need: int, *, one_seq: int, weights: int, available: int, total: int,
                  cap: float | None = None) -> int:
    """The KV cache to reserve: the job's `need`, but no more than what the machine has left once the
    engine's weights, its overhead and `RESERVE` are counted, nor than `cap` × RAM (`CAI_VLLM_CPU_MEM`,
    default 0.3). A smaller cache than the need only makes vLLM run fewer sequences at once; less than
    one sequence (`one_seq`) cannot run at all, and is an error that says what to set."""
    cap = float(os.environ.get(MEM_CAP_ENV, "0.3")) if cap is None else cap
    room = available - weights - ENGINE_OVERHEAD - RESERVE
    kv = min(need, room, int(cap * total))
    if kv < one_seq:
        raise InputError(f"not enough memory for the engine: one sequence of max_model_len needs "
                         f"{gib(one_seq)} of KV cache, and {gib(max(room, 0))} is left once the weights "
                         f"({gib(weights)}) and {gib(ENGINE_OVERHEAD + RESERVE)} of overhead are counted "
                         f"(MemAvailable {gib(available)}); set a smaller engine.max_model_len, or free memory",
                         field="engine.max_model_len")
    return kv


def fit_side_by_side(needs: list[int], available: int) -> bool:
    """Whether engines of these total needs (`model_need(...)["total"]`) fit at once in `available` bytes
    with `RESERVE` left over; if not, they run one after the other."""
    return sum(needs) + RESERVE <= available


# ---- a process the kernel killed ----------------------------------------------------------------------------

def killed_message(returncode: int, what: str, meminfo: str | None = None) -> str | None:
    """One line for a process that ended by SIGKILL (`returncode` -9 from subprocess, 137 from a shell):
    cai never sends it, so on Linux it is almost always the kernel's out-of-memory killer (dmesg, which
    would say so, is usually not readable). Says what to set. None for any other exit."""
    if returncode not in (-signal.SIGKILL, 128 + signal.SIGKILL):
        return None
    available, total = machine_memory(meminfo)
    return (f"{what} was killed by SIGKILL (exit {returncode}), most likely by the kernel's out-of-memory "
            f"killer ({gib(available)} of {gib(total)} available now); give its engine less memory "
            f"(engine.args.kv_cache_memory_bytes, e.g. 536870912, or a smaller engine.max_model_len), "
            f"lower {MEM_CAP_ENV} (the largest share of RAM one engine's KV cache takes), or run fewer jobs "
            f"beside it")


def gib(n: int) -> str:
    """Bytes for a message: GiB with one decimal, MiB below 1 GiB."""
    return f"{n / 2**20:.0f} MiB" if abs(n) < GiB else f"{n / GiB:.1f} GiB"
