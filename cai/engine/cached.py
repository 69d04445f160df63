"""`CachedEngine`: any engine behind the content-addressed request cache.

Hits are answered on the next `poll` without touching the engine; misses go to the engine and their
successful results are stored. Failed results are never cached, so a rerun retries them. The counters
(`engine_requests`, `cache_hits`, `generated_tokens`) are what tests and progress bars read.
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from typing import Any

from cai.data.store import RequestCache
from cai.engine.base import Completion, Engine, Result, SamplingParams, Scored, request_key


def _to_json(r: Result) -> dict[str, Any]:
    return dataclasses.asdict(r)


def _from_json(d: dict[str, Any]) -> Result:
    return Result(outputs=[Completion(**c) for c in d["outputs"]], prompt_tokens=d["prompt_tokens"],
                  error=d.get("error"))


def engine_dtype(engine) -> str | None:
    """The weight dtype an engine computes in ("float32", "bfloat16", ...), or None when unknown (HTTP)."""
    dt = getattr(engine, "dtype", None)
    if dt is None:
        with contextlib.suppress(AttributeError):
            dt = engine.llm.llm_engine.model_config.dtype  # vLLM resolves "auto" here
    return None if dt is None else str(dt).removeprefix("torch.")


class CachedEngine(Engine):
    def __init__(self, engine: Engine, cache: RequestCache | None):
        self.inner, self.cache = engine, cache
        self.name, self.model_id, self.model_hash = engine.name, engine.model_id, engine.model_hash
        self.dtype = engine_dtype(engine)
        # Cache keys name the backend and dtype too: a bf16 vLLM answer is not an fp32 transformers answer.
        self._key_model = f"{engine.model_hash}|{engine.name}|{self.dtype}"
        self.tokenizer, self.max_model_len = engine.tokenizer, engine.max_model_len
        self.reports_stop = getattr(engine, "reports_stop", False)
        self._ready: list[tuple[str, Result]] = []
        self._keys: dict[str, str] = {}
        self.engine_requests = self.cache_hits = self.generated_tokens = 0
        self.last_hits: set[str] = set()  # ids the last `poll` answered from the cache (progress skips them)

    def submit(self, request_id: str, prompt: Any, params: SamplingParams) -> None:
        ids = self.encode(prompt)
        key = request_key(self._key_model, ids, params)
        hit = self.cache.get(key) if self.cache is not None else None
        if hit is not None:
            self.cache_hits += 1
            self._ready.append((request_id, _from_json(hit)))
            return
        self.engine_requests += 1
        self._keys[request_id] = key
        self.inner.submit(request_id, ids, params)

    def lookup(self, prompt: Any, params: SamplingParams) -> Result | None:
        """The cached result of a request, or None; touches neither the engine nor the counters
        (dry runs use it to say what a rerun would regenerate)."""
        if self.cache is None:
            return None
        ids = self.encode(prompt)
        for ident in self._identities():
            hit = self.cache.get(request_key(ident, ids, params))
            if hit is not None:
                return _from_json(hit)
        return None

    def _identities(self) -> list[str]:
        """Cache identities to look up: ours, or, for a tokenizer-only stand-in (dry runs, which load no
        weights and so cannot know the backend's dtype), any backend and dtype of these weights."""
        if self.name != "none":
            return [self._key_model]
        return [f"{self.model_hash}|{e}|{d}" for e in ("vllm", "hf", "openai")
                for d in ("float32", "bfloat16", "float16", None)]

    def has_unfinished(self) -> bool:
        return bool(self._ready) or self.inner.has_unfinished()

    def poll(self) -> list[tuple[str, Result]]:
        out, self._ready = self._ready, []
        self.last_hits = {rid for rid, _ in out}
        if self.inner.has_unfinished():
            for rid, res in self.inner.poll():
                key = self._keys.pop(rid, None)
                if res.ok:
                    self.generated_tokens += sum(len(c.token_ids) for c in res.outputs)
                    if self.cache is not None and key:
                        self.cache.put(key, _to_json(res))
                out.append((rid, res))
        return out

    def _cached_batch(self, kind: str, items: list[tuple[list[int], Any]], run) -> list[Scored]:
        keys = [request_key(self._key_model, [kind, ids, extra], SamplingParams(temperature=0, max_tokens=1))
                for ids, extra in items]
        hits = [self.cache.get(k) if self.cache is not None else None for k in keys]
        out: list[Scored | None] = [None if v is None else Scored(v) for v in hits]
        miss = [i for i, v in enumerate(out) if v is None]
        self.cache_hits += len(items) - len(miss)
        self.engine_requests += len(miss)
        if miss:
            fresh = run([items[i] for i in miss])
            for i, r in zip(miss, fresh):
                out[i] = r
                if self.cache is not None and r.ok:  # errors are retried on the next run, never cached
                    self.cache.put(keys[i], r.value)
        return out

    def top_logprobs(self, prompts: Sequence[Any], k: int = 20) -> list[Scored[dict[int, float]]]:
        items = [(self.encode(p), k) for p in prompts]
        # JSON keys are strings: token ids go into the cache as str and come back as int
        res = self._cached_batch("top", items, lambda xs: [
            Scored({str(t): v for t, v in r.value.items()}) if r.ok else r
            for r in self.inner.top_logprobs([ids for ids, _ in xs], k)])
        return [Scored({int(t): v for t, v in r.value.items()}) if r.ok else r for r in res]

    def score_continuations(self, prompts: Sequence[Any], continuations: Sequence[list[int]]
                            ) -> list[Scored[list[float]]]:
        items = [(self.encode(p), list(c)) for p, c in zip(prompts, continuations)]
        return self._cached_batch("score", items, lambda xs: self.inner.score_continuations(
            [ids for ids, _ in xs], [c for _, c in xs]))

    def close(self) -> None:
        self.inner.close()
