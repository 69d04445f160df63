"""transformers backend: batched `generate` with left padding, for machines with neither vLLM build.

Sampling happens in a per-row logits processor so that each request keeps its own seed, temperature and
top_p inside a shared batch (and gets the same sample whatever batch it lands in); `generate` itself runs
greedy over the one-hot scores the processor returns.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

import torch

from cai.engine.base import Completion, Engine, Result, SamplingParams, Scored
from cai.models import model_hash, resolve_model


class _RowSampler:
    """LogitsProcessor: per-row temperature/top_p/seed sampling; records the raw log-prob of each pick."""

    def __init__(self, params: list[SamplingParams], seeds: list[int], prompt_len: int = 0):
        self.params, self.prompt_len = params, prompt_len
        self.gens = [torch.Generator().manual_seed(s) for s in seeds]
        self.logprobs: list[list[float]] = [[] for _ in params]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores = scores.float()  # (B, V)
        logp = torch.log_softmax(scores, dim=-1)
        picks = torch.empty(scores.shape[0], dtype=torch.long)
        for i, p in enumerate(self.params):
            row = scores[i]
            if p.frequency_penalty:  # OpenAI/vLLM: minus penalty × count of the token in this completion so far
                gen = input_ids[i, self.prompt_len:]
                row = row - p.frequency_penalty * torch.bincount(gen.cpu(), minlength=row.shape[0])[:row.shape[0]].to(row)
            if p.temperature == 0:
                picks[i] = int(torch.argmax(row))
                continue
            probs = torch.softmax(row / p.temperature, dim=-1)
            if p.top_p < 1.0:
                sp, si = torch.sort(probs, descending=True)
                keep = torch.cumsum(sp, 0) - sp < p.top_p  # smallest prefix reaching top_p
                probs = torch.zeros_like(probs).scatter_(0, si[keep], sp[keep])
            picks[i] = int(torch.multinomial(probs.cpu(), 1, generator=self.gens[i]))
        for i in range(len(self.params)):
            self.logprobs[i].append(float(logp[i, picks[i]]))
        out = torch.full_like(scores, float("-inf"))
        out[torch.arange(len(picks)), picks.to(out.device)] = 0.0
        return out


class _RowStopper:
    """StoppingCriteria: per-row max_tokens and stop strings (checked on the decoded tail)."""

    def __init__(self, tok, params: list[SamplingParams], prompt_len: int):
        self.tok, self.params, self.prompt_len = tok, params, prompt_len

    def __call__(self, input_ids: torch.Tensor, scores, **kw) -> torch.Tensor:
        gen = input_ids[:, self.prompt_len:]
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for i, p in enumerate(self.params):
            if gen.shape[1] >= p.max_tokens:
                done[i] = True
            elif p.stop:
                tail = self.tok.decode(gen[i, -16:], skip_special_tokens=True)
                done[i] = any(s in tail for s in p.stop)
        return done


class HFEngine(Engine):
    name = "hf"
    reports_stop = True

    def __init__(self, model: str, *, dtype: str = "auto", device: str | None = None, batch_size: int = 64,
                 max_model_len: int | None = None, seed: int = 0, **unused: Any):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = resolve_model(model)
        self.model_id, self.model_path, self.model_hash = str(model), path, model_hash(path)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        torch_dtype = {"auto": torch.bfloat16 if self.device == "cuda" else torch.float32,
                       "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
        self.dtype = str(torch_dtype).removeprefix("torch.")  # part of the request-cache key
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype).to(self.device).eval()
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None \
            else self.tokenizer.eos_token_id
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.eos_token_id}
        self.max_model_len = max_model_len or getattr(self.model.config, "max_position_embeddings", 4096)
        self.batch_size, self.seed = batch_size, seed
        self._queue: deque[tuple[str, list[int], SamplingParams]] = deque()

    # ---- continuous feed: each poll runs one batch of whatever is queued -------------------------
    def submit(self, request_id: str, prompt: Any, params: SamplingParams) -> None:
        self._queue.append((request_id, self.encode(prompt), params))

    def has_unfinished(self) -> bool:
        return bool(self._queue)

    def poll(self) -> list[tuple[str, Result]]:
        done: list[tuple[str, Result]] = []
        rows: list[tuple[str, int, list[int], SamplingParams, int]] = []  # (rid, sample idx, ids, params, seed)
        while self._queue and len(rows) < self.batch_size:
            rid, ids, p = self._queue.popleft()
            if len(ids) >= self.max_model_len:
                done.append((rid, Result(error=self._too_long(len(ids)))))
                continue
            base = p.seed if p.seed is not None else int(torch.randint(0, 2**31 - 1, (1,)))
            rows += [(rid, j, ids, p, base + j) for j in range(p.n)]
        if rows:
            rows.sort(key=lambda r: len(r[2]))  # similar lengths together: less padding
            comps = self._generate_rows(rows)
            results: dict[str, Result] = {}
            for (rid, j, ids, p, _), c in zip(rows, comps):
                r = results.setdefault(rid, Result(outputs=[None] * p.n, prompt_tokens=len(ids)))
                r.outputs[j] = c
            done += list(results.items())
        return done

    @torch.no_grad()
    def _generate_rows(self, rows) -> list[Completion]:
        from transformers import LogitsProcessorList, StoppingCriteriaList

        ids = [r[2] for r in rows]
        params = [r[3] for r in rows]
        input_ids, attn = self._left_pad(ids)
        T = input_ids.shape[1]
        max_new = min(max(p.max_tokens for p in params), self.max_model_len - T)
        sampler = _RowSampler(params, [r[4] for r in rows], T)
        gen = self.model.generate(
            input_ids=input_ids, attention_mask=attn, do_sample=False, max_new_tokens=max(1, max_new),
            logits_processor=LogitsProcessorList([sampler]),
            stopping_criteria=StoppingCriteriaList([_RowStopper(self.tokenizer, params, T)]),
            pad_token_id=self.pad_id, eos_token_id=list(self.eos_ids),
            temperature=None, top_p=None, top_k=None,
        )[:, T:].tolist()
        out = []
        for i, p in enumerate(params):
            toks, reason = gen[i][: p.max_tokens], "length"
            for k, t in enumerate(toks):
                if t in self.eos_ids:
                    toks, reason = toks[: k + 1], "stop"
                    break
            text = self.tokenizer.decode(toks, skip_special_tokens=True)
            hit = min(((text.index(s), s) for s in p.stop if s in text), default=None)  # the first to appear
            if hit is not None:
                text, reason = text[: hit[0]], "stop"
            lps = sampler.logprobs[i][: len(toks)] if p.logprobs else None
            out.append(Completion(text, toks, lps, reason, hit[1] if hit else None))
        return out

    def _left_pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        T = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), T), self.pad_id, dtype=torch.long)
        attn = torch.zeros((len(seqs), T), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, T - len(s):] = torch.tensor(s)
            attn[i, T - len(s):] = 1
        return ids.to(self.device), attn.to(self.device)

    def _too_long(self, n_tokens: int) -> str:
        # Same wording as the vLLM backend, so stages see one error whichever engine ran.
        return f"ValueError: prompt has {n_tokens} tokens; the model's context is {self.max_model_len}"

    # ---- scoring ---------------------------------------------------------------------------------
    @torch.no_grad()
    def _forward(self, seqs: list[list[int]]) -> tuple[torch.Tensor, int]:
        ids, attn = self._left_pad(seqs)
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        logits = self.model(input_ids=ids, attention_mask=attn, position_ids=pos).logits  # (B, T, V)
        return torch.log_softmax(logits.float(), dim=-1), ids.shape[1]

    # ---- weights (PPO) ---------------------------------------------------------------------------
    def load_weights(self, named_tensors) -> None:
        """`WeightSync`: load `(checkpoint name, tensor)` pairs into this engine's own copy of the model."""
        self.model.load_state_dict({k: v.to(self.device) for k, v in named_tensors}, strict=True)

    def top_logprobs(self, prompts: Sequence[Any], k: int = 20) -> list[Scored[dict[int, float]]]:
        seqs = [self.encode(p) for p in prompts]
        out: list[Any] = [None] * len(seqs)
        for lo in range(0, len(seqs), self.batch_size):
            chunk = list(enumerate(seqs))[lo: lo + self.batch_size]
            ok = [(i, s) for i, s in chunk if len(s) < self.max_model_len]
            for i, s in chunk:
                if len(s) >= self.max_model_len:
                    out[i] = Scored(error=self._too_long(len(s)))
            if not ok:
                continue
            logp, _ = self._forward([s for _, s in ok])
            vals, idx = logp[:, -1].topk(k, dim=-1)
            for (i, _), v, ix in zip(ok, vals.tolist(), idx.tolist()):
                out[i] = Scored(dict(zip(ix, v)))
        return out

    def score_continuations(self, prompts: Sequence[Any], continuations: Sequence[list[int]]
                            ) -> list[Scored[list[float]]]:
        seqs = [(self.encode(p), list(c)) for p, c in zip(prompts, continuations)]
        out: list[Any] = [None] * len(seqs)
        for lo in range(0, len(seqs), self.batch_size):
            chunk = list(enumerate(seqs))[lo: lo + self.batch_size]
            ok = [(i, p, c) for i, (p, c) in chunk if len(p) + len(c) <= self.max_model_len]
            for i, (p, c) in chunk:
                if len(p) + len(c) > self.max_model_len:
                    out[i] = Scored(error=self._too_long(len(p) + len(c)))
            if not ok:
                continue
            logp, T = self._forward([p + c for _, p, c in ok])
            for row, (i, _, c) in enumerate(ok):
                start = T - len(c)  # continuation token j sits at T-len(c)+j, predicted from the step before
                out[i] = Scored([float(logp[row, start + j - 1, t]) for j, t in enumerate(c)])
        return out
