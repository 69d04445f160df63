"""vLLM backend: an in-process `vllm.LLM` (CPU or GPU) with prefix caching.

Requests are fed straight into `llm.llm_engine` (`add_request` + `step`), so callers can keep the
engine full with a continuous stream instead of one barrier-separated `generate` per stage.
Engine arguments pass through unchanged (`tensor_parallel_size`, `data_parallel_size`,
`distributed_executor_backend="ray"`, ...), so the same code scales from this CPU to a GPU node.
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cai.engine.base import Completion, Engine, Result, SamplingParams, Scored
from cai.engine.memory import (
    DEFAULT_MAX_SEQS,
    DTYPE_BYTES,
    kv_bytes_per_token,
    kv_cache_need,
    machine_memory,
    model_need,
    size_kv_cache,
)
from cai.errors import InputError
from cai.models import model_hash, resolve_model
from cai.quiet import is_verbose


def _cuda_available() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:  # pragma: no cover
        return False


CPU_DTYPE = "float32"
"""The default dtype on CPU (`dtype="auto"`) for jobs that read log-probs (labels, PPO rollouts, scoring):
the hf engine and the trainers run fp32 on CPU, so vLLM's log-probs match theirs."""

CPU_TEXT_DTYPE = "bfloat16"
"""The default dtype on CPU for jobs that only read sampled text (`text_only`: generate, critique, sample,
contrast), where the CPU computes bf16 natively (`cpu_has_bf16`); else `CPU_DTYPE`. Compare the two with
`bench/engines.py --start-only --variants '{"dtype": "float32"}' '{"dtype": "bfloat16"}'` (docs/engines.md)."""

CPU_COMPILE_MIN_TOKENS = 150_000
"""On CPU, compile the model (torch.compile) only for a job whose token budget (`work_tokens`: what the
stage may generate) is at least this; smaller jobs run eagerly. Compiling costs about a minute at the
first start and generates a few percent faster, less on long attention-bound contexts; from about this
budget it pays back even its first, uncached start (figures in docs/engines.md).
`--engine-arg enforce_eager=true|false` decides for any job."""


CPU_BLOCK_SIZE = 32
"""KV-cache block size on CPU: prefix caching works in whole blocks (vLLM's CPU default is 128)."""


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (x86 AVX512-BF16 or AMX, Arm BF16); without it bf16 is
    emulated and slower than fp32."""
    try:
        return cpuinfo_has_bf16(Path("/proc/cpuinfo").read_text())
    except OSError:  # not Linux: fp32, the safe choice
        return False


def cpuinfo_has_bf16(info: str) -> bool:
    """`cpu_has_bf16` on the text of /proc/cpuinfo (x86 `flags`, Arm `Features`)."""
    flags = set()
    for line in info.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def cpu_dtype(text_only: bool) -> str:
    """What `dtype="auto"` means on CPU: bf16 for a text-only job where the CPU has it, else fp32."""
    return CPU_TEXT_DTYPE if text_only and cpu_has_bf16() else CPU_DTYPE


def compile_on_cpu(work_tokens: int | None) -> bool:
    """Whether a CPU job of `work_tokens` new tokens (None: unknown, a small job) is worth compiling."""
    return (work_tokens or 0) >= CPU_COMPILE_MIN_TOKENS


# vLLM warnings that never call for action from a cai user (shown with --verbose).
_NOISE = ("global random seed is set", "doesn't allow to use `torch.set_num_threads`", "Passing raw prompts",
          "is deprecated", "Attempted to load weight", "Triton is installed",
          # every in-place weight reload (PPO's sync): rotary embeddings have no weights to load
          "RotaryEmbedding: Failed to load weights")


class _Quiet(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or (
            record.levelno >= logging.WARNING and not any(n in record.getMessage() for n in _NOISE))


def quiet_logs(verbose: bool) -> None:
    """vLLM's INFO lines (hundreds per engine start) only with `verbose`; otherwise its warnings that
    matter. Called before `import vllm` (which reads the level) and after the engine starts (which
    installs vLLM's handler)."""
    if verbose:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "INFO")
        return
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    # vLLM's own import uses an API torch deprecated (`torch.distributed.reduce_op`): two lines per stage
    warnings.filterwarnings("ignore", message=r".*reduce_op.* is deprecated", category=FutureWarning)
    for h in logging.getLogger("vllm").handlers:
        if not any(isinstance(f, _Quiet) for f in h.filters):
            h.addFilter(_Quiet())


@contextlib.contextmanager
def _quiet_start(verbose: bool):
    """Engine start-up warns about configuration choices cai made on purpose (eager mode, no chunked
    prefill, no tcmalloc preload...): without `verbose`, only errors get through while it runs."""
    if verbose:
        yield
        return
    before = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(before)


def cpu_kv_cache_bytes(model_dir: str | Path, dtype: str, max_model_len: int, *, seqs: int | None = None,
                       block_size: int = CPU_BLOCK_SIZE) -> int:
    """KV cache reserved on CPU: what `seqs` concurrent sequences of `max_model_len` tokens need (None: vLLM's
    default concurrency), within what the machine has left (`cai.engine.size_kv_cache`). Given
    explicitly to vLLM, it skips the memory-profiling run, which fails when other processes' memory
    changes while it runs."""
    need = model_need(model_dir, dtype, max_model_len, seqs or DEFAULT_MAX_SEQS, block_size=block_size)
    per_token = kv_bytes_per_token(json.loads((Path(model_dir) / "config.json").read_text()),
                                          DTYPE_BYTES.get(dtype, 4))
    one = kv_cache_need(per_token, max_model_len, 1, block_size=block_size, headroom=1.0)
    available, total = machine_memory()
    return size_kv_cache(need["kv"], one_seq=one, weights=need["weights"], available=available, total=total)


class VLLMEngine(Engine):
    name = "vllm"
    reports_stop = True

    def __init__(self, model: str, *, dtype: str = "auto", max_model_len: int | None = 4096,
                 gpu_memory_utilization: float | None = None, seed: int = 0, enable_prefix_caching: bool = True,
                 verbose: bool | None = None, work_tokens: int | None = None, text_only: bool = False,
                 max_seqs: int | None = None, **engine_args: Any):
        path = resolve_model(model)
        on_gpu = _cuda_available()
        verbose = is_verbose() if verbose is None else verbose
        quiet_logs(verbose)
        if engine_args.get("tensor_parallel_size", 1) == 1 and engine_args.get("data_parallel_size", 1) == 1:
            # In-process engine core: no spawn guard needed, and weights can be updated in place (PPO).
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        if on_gpu and gpu_memory_utilization is None:
            gpu_memory_utilization = 0.9
        if not on_gpu:
            if dtype == "auto":
                dtype = cpu_dtype(text_only)
            if gpu_memory_utilization is None and "kv_cache_memory_bytes" not in engine_args:
                # else: that fraction of RAM, found by vLLM's profiling run
                seqs = min(x for x in (max_seqs, engine_args.get("max_num_seqs"), DEFAULT_MAX_SEQS) if x)
                engine_args["kv_cache_memory_bytes"] = cpu_kv_cache_bytes(
                    path, dtype, max_model_len or 8192, seqs=seqs,
                    block_size=engine_args.get("block_size", CPU_BLOCK_SIZE))
            # vLLM's CPU runner crashes on seeded requests whose prefill is chunked (it rewinds the
            # request's torch.Generator offset, which CPU generators do not have), so prefill whole prompts.
            engine_args.setdefault("enable_chunked_prefill", False)
            engine_args.setdefault("max_num_batched_tokens", max(max_model_len or 8192, 8192))
            engine_args.setdefault("enforce_eager", not compile_on_cpu(work_tokens))
            # vLLM's CPU default of 128-token KV blocks leaves each request's last partial block out of the
            # prefix cache: a multi-turn job re-prefills ~64 tokens more per request. 32 is the CPU attention
            # kernel's smallest (docs/engines.md has the measurement).
            engine_args.setdefault("block_size", CPU_BLOCK_SIZE)
            # vLLM 0.32's AOT-compiled artifacts fail to reload under torch 2.13 ("'function' object has no
            # attribute 'finalize_loading'"), so each start compiled again; its older compile cache
            # reloads. Ignored when the model runs eagerly.
            os.environ.setdefault("VLLM_USE_AOT_COMPILE", "0")
        import vllm

        self.model_id, self.model_path = str(model), path
        self.model_hash = model_hash(path)
        kw = {} if gpu_memory_utilization is None else {"gpu_memory_utilization": gpu_memory_utilization}
        if not verbose:
            engine_args.setdefault("use_tqdm_on_load", False)  # a progress bar for one small file
        try:
            with _quiet_start(verbose):
                self.llm = vllm.LLM(model=str(path), tokenizer=str(path), dtype=dtype, max_model_len=max_model_len,
                                    seed=seed, enable_prefix_caching=enable_prefix_caching, **kw, **engine_args)
        except (TypeError, ValueError) as e:  # an engine argument vLLM rejects (unknown name, bad value)
            raise InputError(f"vLLM would not start with these settings ({type(e).__name__}: {e}); "
                             "see --engine-arg / engine.args", field="engine") from None
        quiet_logs(verbose)  # now that vLLM's handler exists
        self.dtype = str(self.llm.llm_engine.model_config.dtype).removeprefix("torch.")
        self.compiled = not self.llm.llm_engine.model_config.enforce_eager  # CPU: chosen per job size
        self.tokenizer = self.llm.get_tokenizer()
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len
        self._engine = self.llm.llm_engine
        self._ids: dict[str, str] = {}  # vLLM's request id -> ours
        self._kind: dict[str, str] = {}  # ours -> "gen" | "top" | "score"
        self._extra: dict[str, Any] = {}
        self._done: list[tuple[str, Any]] = []  # failed at submission; reported by the next poll
        self.prompt_tokens = self.cached_prompt_tokens = 0  # prefix-cache hit rate = cached / prompt

    # ---- continuous feed -------------------------------------------------------------------------
    def _add(self, rid: str, ids: list[int], sp, kind: str, extra: Any = None) -> None:
        from vllm.inputs import TokensPrompt
        self._kind[rid], self._extra[rid] = kind, extra
        try:
            if len(ids) >= self.max_model_len:
                raise ValueError(f"prompt has {len(ids)} tokens; the model's context is {self.max_model_len}")
            vid = self._engine.add_request(rid, TokensPrompt(prompt_token_ids=ids), sp)
        except Exception as e:  # one bad request must not take the batch down
            self._done.append((rid, f"{type(e).__name__}: {e}"))
            return
        self._ids[vid] = rid
        self._ids[rid] = rid

    def submit(self, request_id: str, prompt: Any, params: SamplingParams) -> None:
        self._add(request_id, self.encode(prompt), _to_vllm(params), "gen")

    def has_unfinished(self) -> bool:
        return bool(self._done) or self._engine.has_unfinished_requests()

    def poll(self) -> list[tuple[str, Any]]:
        finished, self._done = [(rid, self._fail(rid, err)) for rid, err in self._done], []
        if not self._engine.has_unfinished_requests():
            return finished
        for out in self._engine.step():
            if not out.finished:
                continue
            rid = self._ids.pop(out.request_id, None) or self._ids.pop(getattr(out, "external_req_id", ""), None)
            if rid is None:
                continue
            self._ids.pop(rid, None)
            kind, extra = self._kind.pop(rid), self._extra.pop(rid)
            self.prompt_tokens += len(out.prompt_token_ids or [])
            self.cached_prompt_tokens += out.num_cached_tokens or 0
            finished.append((rid, _CONVERT[kind](out, extra)))
        return finished

    def _fail(self, rid: str, err: str):
        kind = self._kind.pop(rid, "gen")
        self._extra.pop(rid, None)
        return Result(error=err) if kind == "gen" else Scored(error=err)

    # ---- scoring ---------------------------------------------------------------------------------
    def _run(self, items: list[tuple[list[int], Any, str, Any]]) -> list[Any]:
        for i, (ids, sp, kind, extra) in enumerate(items):
            self._add(f"_s{i}", ids, sp, kind, extra)
        out: dict[str, Any] = {}
        while len(out) < len(items):
            out.update(self.poll())
        return [out[f"_s{i}"] for i in range(len(items))]

    def top_logprobs(self, prompts: Sequence[Any], k: int = 20) -> list[Scored[dict[int, float]]]:
        import vllm
        sp = vllm.SamplingParams(max_tokens=1, temperature=0.0, logprobs=k, detokenize=False,
                                 output_kind=vllm.sampling_params.RequestOutputKind.FINAL_ONLY)
        return self._run([(self.encode(p), sp, "top", None) for p in prompts])

    def score_continuations(self, prompts: Sequence[Any], continuations: Sequence[list[int]]
                            ) -> list[Scored[list[float]]]:
        import vllm
        sp = vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False,
                                 output_kind=vllm.sampling_params.RequestOutputKind.FINAL_ONLY)
        items = []
        for p, c in zip(prompts, continuations):
            ids = self.encode(p)
            items.append((ids + list(c), sp, "score", (len(ids), list(c))))
        return self._run(items)

    # ---- weights (PPO) ---------------------------------------------------------------------------
    def load_weights(self, named_tensors) -> None:
        """`WeightSync`: update the served weights in place (in-process engine), then drop the prefix-cache
        blocks, whose KV was computed with the old weights."""
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": list(named_tensors)})
        self.llm.reset_prefix_cache()

    def reset_prefix_cache(self) -> None:
        self.llm.reset_prefix_cache()

    def close(self) -> None:
        self.llm = self._engine = None
        import gc
        gc.collect()


def _to_vllm(p: SamplingParams):
    import vllm
    return vllm.SamplingParams(
        n=p.n, temperature=p.temperature, top_p=p.top_p, max_tokens=p.max_tokens, seed=p.seed,
        stop=list(p.stop) or None, logprobs=0 if p.logprobs else None, frequency_penalty=p.frequency_penalty,
        output_kind=vllm.sampling_params.RequestOutputKind.FINAL_ONLY,
    )


def _gen_result(out, _extra) -> Result:
    comps = []
    for o in out.outputs:
        lps = None
        if o.logprobs is not None:
            lps = [float(step[t].logprob) for step, t in zip(o.logprobs, o.token_ids)]
        reason = o.finish_reason if o.finish_reason in ("stop", "length") else (o.finish_reason or "stop")
        comps.append(Completion(o.text, list(o.token_ids), lps, reason,
                                o.stop_reason if isinstance(o.stop_reason, str) else None))
    return Result(outputs=comps, prompt_tokens=len(out.prompt_token_ids or []))


def _top_result(out, _extra) -> Scored[dict[int, float]]:
    step = out.outputs[0].logprobs[0]
    return Scored({int(t): float(lp.logprob) for t, lp in step.items()})


def _score_result(out, extra) -> Scored[list[float]]:
    n_prompt, cont = extra
    plp = out.prompt_logprobs  # position i: {token_id: Logprob} for prompt token i (None at 0)
    return Scored([float(plp[n_prompt + j][t].logprob) for j, t in enumerate(cont)])


_CONVERT = {"gen": _gen_result, "top": _top_result, "score": _score_result}
