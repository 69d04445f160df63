"""How `cai eval values` runs its two answering engines: side by side when both fit in the memory the machine
has left, else one after the other (`cai.engine.memory` sizes each from what the answers need).

The model and the baseline answer in two `cai generate` processes (vLLM allows one engine per process).
Each engine needs its weights, its KV cache for every prompt at once, and a process's overhead; two of
them on a 24 GB machine that is running other jobs can be more than it has.
"""
from __future__ import annotations

from dataclasses import dataclass

from cai.engine import default_engine, memory
from cai.engine.vllm_engine import CPU_BLOCK_SIZE, cpu_dtype
from cai.errors import InputError
from cai.evaluate.config import ROLES, ValuesConfig
from cai.models import resolve_model


@dataclass(frozen=True)
class AnswerPlan:
    groups: list[list[str]]
    """Roles that run at once, group after group: [[model, baseline]] or [[model], [baseline]]."""
    reason: str
    """One line for the log: why this order."""


def side_need(cfg: ValuesConfig, role: str, n_requests: int) -> int:
    """Bytes one side's engine takes (weights + KV cache + process overhead), as its `cai generate` child
    will size it (`VLLMEngine` with `max_seqs` = the prompts); 0 for an OpenAI-compatible server. A model
    that does not exist is an error naming the role's field, before any process starts."""
    spec = cfg.engine
    backend = spec.backend or default_engine()
    if backend == "openai":
        return 0
    try:
        path = resolve_model(getattr(cfg, role))
    except InputError as e:
        raise InputError(e.message, file=e.file, field=role) from None
    dtype = spec.dtype if spec.dtype != "auto" else (cpu_dtype(text_only=True) if backend == "vllm" else "float32")
    seqs = min(x for x in (n_requests, spec.args.get("max_num_seqs"), memory.DEFAULT_MAX_SEQS) if x)
    need = memory.model_need(path, dtype, spec.max_model_len, seqs,
                             block_size=spec.args.get("block_size", CPU_BLOCK_SIZE))
    kv = spec.args.get("kv_cache_memory_bytes")
    return need["total"] if kv is None else need["weights"] + int(kv) + memory.ENGINE_OVERHEAD


def plan_answers(needs: dict[str, int], available: int, *, gpu_shared: bool = False) -> AnswerPlan:
    """Both sides at once when their needs fit in `available` with `memory.RESERVE` to spare, else one after
    the other. `gpu_shared`: two vLLM engines on one GPU, each claiming its default 90% of it, never fit."""
    total = sum(needs.values())
    if gpu_shared:
        return AnswerPlan([[r] for r in ROLES], "one after the other: two vLLM engines cannot share the GPU at "
                                                "their default gpu_memory_utilization")
    if memory.fit_side_by_side(list(needs.values()), available):
        return AnswerPlan([list(ROLES)], f"side by side: both engines need {memory.gib(total)}, "
                                         f"{memory.gib(available)} available")
    return AnswerPlan([[r] for r in ROLES], f"one after the other: both engines would need "
                                            f"{memory.gib(total)}, {memory.gib(available)} available")


def answer_plan(cfg: ValuesConfig, n_requests: int) -> AnswerPlan:
    """`plan_answers` for this machine now (MemAvailable from /proc/meminfo)."""
    needs = {role: side_need(cfg, role, n_requests) for role in ROLES}
    backend = cfg.engine.backend or default_engine()
    gpu_shared = backend == "vllm" and "gpu_memory_utilization" not in cfg.engine.args and _on_gpu()
    available, _ = memory.machine_memory()
    return plan_answers(needs, available, gpu_shared=gpu_shared)


def _on_gpu() -> bool:
    import torch
    return torch.cuda.is_available()
