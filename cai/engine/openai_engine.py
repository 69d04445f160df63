"""OpenAI-compatible HTTP backend: `vllm serve`, TGI, or any server speaking `/v1/completions` and
`/v1/chat/completions`.

An asyncio loop in a background thread owns one `httpx.AsyncClient`; a semaphore bounds the requests in
flight, and each attempt goes to the least-loaded of the base URLs. 429, 5xx, timeouts and connection
errors are retried with exponential backoff and jitter (honouring `Retry-After`); other 4xx fail at
once. A request that still fails becomes `Result(error=...)` (or an error string when scoring) on its
own row, so one bad request never takes the batch down.

Prompts that are token ids go to `/v1/completions` as a list of ints (vLLM accepts this); rendered text
goes with `add_special_tokens: false`. `chat()` sends `messages` to `/v1/chat/completions` and lets
the server apply the chat template. A local tokenizer (`tokenizer or model`, resolved through
`cai.models`) renders chats for `submit`, tokenizes scoring prompts, and recovers token ids from
servers that do not return them.
"""
from __future__ import annotations

import asyncio
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from cai.engine.base import Completion, Engine, Message, Result, SamplingParams, Scored
from cai.engine.openai_wire import (
    TOKEN_ID_PREFIX,
    RequestFailed,
    as_scored,
    chat_logprobs,
    completion_logprobs,
    describe_error,
    load_tokenizer,
    per_prompt,
    prompt_tokens,
    retry_after,
    server_message,
    v1_url,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_MODEL_LEN = 4096
_COOLDOWN = 5.0  # seconds a base URL is passed over after a failed attempt, while another one is healthy


class OpenAIEngine(Engine):
    name = "openai"

    def __init__(self, model: str, *, base_urls: list[str] | str, api_key: str | None = None,
                 max_concurrency: int = 32, timeout: float = 120, max_retries: int = 5, backoff: float = 0.5,
                 tokenizer: str | None = None, served_model_name: str | None = None,
                 vllm_extensions: bool = True):
        """
        model: the model name; sent in requests unless `served_model_name` is given, and resolved
            locally (alias, directory or hub id) for the tokenizer unless `tokenizer` is given.
        base_urls: one or more server roots, e.g. "http://127.0.0.1:8000" (a trailing "/v1" is optional).
        max_concurrency: requests in flight across all base URLs together.
        timeout: seconds per HTTP attempt; a slower attempt counts as a failure and is retried.
        max_retries: retries after the first attempt; `backoff * 2**attempt` seconds (with jitter) between.
        vllm_extensions: send vLLM's extra body fields (`return_token_ids`, `return_tokens_as_token_ids`,
            `add_special_tokens`). Turn off for servers that reject unknown fields.
        """
        import httpx

        urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        if not urls:
            raise ValueError("base_urls is empty")
        if max_concurrency < 1 or max_retries < 0 or timeout <= 0 or backoff < 0:
            raise ValueError("need max_concurrency >= 1, max_retries >= 0, timeout > 0 and backoff >= 0")
        self.base_urls = [v1_url(u) for u in urls]
        self.model_id = model
        self.request_model = served_model_name or model
        self.max_concurrency, self.max_retries, self.backoff = max_concurrency, max_retries, backoff
        self.vllm_extensions = vllm_extensions
        self.tokenizer, self.model_hash = load_tokenizer(model, tokenizer)

        # Per base URL, touched only on the loop thread: requests in flight, and when it may be used again.
        self._inflight = [0] * len(self.base_urls)
        self._cool_until = [0.0] * len(self.base_urls)
        self._rr = 0
        self._done: queue.Queue[tuple[str, Result]] = queue.Queue()
        self._pending = 0  # submitted, not yet returned by poll
        self._lock = threading.Lock()

        # The loop thread owns the client and the semaphore; other threads hand it coroutines (`_call`, `submit`).
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="cai-openai-engine", daemon=True)
        self._thread.start()
        key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"

        async def setup():
            self._sem = asyncio.Semaphore(max_concurrency)
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(timeout), headers={"Authorization": f"Bearer {key}"},
                limits=httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency))
        self._call(setup())
        self.max_model_len = self._call(self._fetch_max_model_len())

    # ---- continuous feed -------------------------------------------------------------------------
    def submit(self, request_id: str, prompt: Any, params: SamplingParams) -> None:
        with self._lock:
            self._pending += 1

        async def run():
            self._done.put((request_id, await self._generate_one(prompt, params)))
        asyncio.run_coroutine_threadsafe(run(), self._loop)

    def poll(self) -> list[tuple[str, Result]]:
        out = []
        try:  # wait briefly when nothing is ready, so a caller's poll loop does not spin
            out.append(self._done.get(timeout=0.05 if self.has_unfinished() else 0))
            while True:
                out.append(self._done.get_nowait())
        except queue.Empty:
            pass
        with self._lock:
            self._pending -= len(out)
        return out

    def has_unfinished(self) -> bool:
        return self._pending > 0

    # ---- batch -----------------------------------------------------------------------------------
    def generate(self, prompts: Sequence[Any], params: SamplingParams | Sequence[SamplingParams]) -> list[Result]:
        plist = per_prompt(params, len(prompts))
        return self._gather([lambda p=p, sp=sp: self._generate_one(p, sp) for p, sp in zip(prompts, plist)])

    def chat(self, conversations: Sequence[list[Message]], params, *, continue_final_message: bool = False
             ) -> list[Result]:
        """Like `Engine.chat`, but through `/v1/chat/completions`: the server applies the chat template."""
        plist = per_prompt(params, len(conversations))
        return self._gather([lambda c=c, sp=sp: self._chat_one(c, sp, continue_final_message)
                             for c, sp in zip(conversations, plist)])

    # ---- scoring ---------------------------------------------------------------------------------
    def top_logprobs(self, prompts: Sequence[Any], k: int = 20) -> list[Scored[dict[int, float]]]:
        async def one(prompt):
            body = {**self._prompt_body(prompt), "max_tokens": 1, "temperature": 0, "logprobs": k}
            if self.vllm_extensions:
                body["return_tokens_as_token_ids"] = True
            choice = (await self._post("/completions", body))["choices"][0]
            return {self._token_id(t): float(lp) for t, lp in choice["logprobs"]["top_logprobs"][0].items()}
        return self._gather([lambda p=p: as_scored(one(p)) for p in prompts])

    def score_continuations(self, prompts: Sequence[Any], continuations: Sequence[list[int]]
                            ) -> list[Scored[list[float]]]:
        async def one(prompt, cont):
            cont = list(cont)
            ids = self.encode(prompt)
            if not cont:
                return []
            # Legacy `echo` + `logprobs` returns the log-prob of every prompt token given its prefix, so the
            # continuation rides along as the tail of the prompt (teacher forcing in one forward pass).
            body = {"model": self.request_model, "prompt": ids + cont, "max_tokens": 1, "temperature": 0,
                    "echo": True, "logprobs": 0}
            if self.vllm_extensions:
                body["return_tokens_as_token_ids"] = True
            lp = (await self._post("/completions", body))["choices"][0]["logprobs"]
            n = len(ids)
            tokens, values = lp["tokens"][n:n + len(cont)], lp["token_logprobs"][n:n + len(cont)]
            if len(values) < len(cont) or any(v is None for v in values):
                raise RequestFailed(f"server returned no log-prob for some continuation tokens "
                                    f"(prompt {n} tokens, continuation {len(cont)})")
            if tokens and str(tokens[0]).startswith(TOKEN_ID_PREFIX) and \
                    [self._token_id(t) for t in tokens] != cont:
                raise RequestFailed("server re-tokenized the echoed prompt; continuation tokens do not line up")
            return [float(v) for v in values]
        return self._gather([lambda p=p, c=c: as_scored(one(p, c)) for p, c in zip(prompts, continuations)])

    # ---- text <-> tokens -------------------------------------------------------------------------
    def format_chat(self, messages: list[Message], *, continue_final_message: bool = False) -> list[int]:
        self._need_tokenizer("format_chat")
        return super().format_chat(messages, continue_final_message=continue_final_message)

    def encode(self, prompt: Any) -> list[int]:
        if isinstance(prompt, str):
            self._need_tokenizer("encoding a text prompt")
        return super().encode(prompt)

    def close(self) -> None:
        if not self._loop.is_running():
            return

        async def shutdown():
            for t in asyncio.all_tasks():
                if t is not asyncio.current_task():
                    t.cancel()
            await self._client.aclose()
        try:
            self._call(shutdown(), timeout=10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()

    # ---- one request of each kind (run on the loop) ----------------------------------------------
    async def _generate_one(self, prompt: Any, params: SamplingParams) -> Result:
        try:
            body = {**self._prompt_body(prompt), **self._sampling_body(params)}
            data = await self._post("/completions", body)
            comps = [self._completion(c, c.get("text") or "", completion_logprobs(c, params))
                     for c in sorted(data["choices"], key=lambda c: c.get("index", 0))]
            return Result(outputs=comps, prompt_tokens=prompt_tokens(data))
        except Exception as e:  # noqa: BLE001 - a failed request is an error on its row, never a crash
            return Result(error=describe_error(e))

    async def _chat_one(self, messages: list[Message], params: SamplingParams, continue_final: bool) -> Result:
        try:
            body = {"model": self.request_model, "messages": messages, **self._sampling_body(params)}
            if params.logprobs:
                body["logprobs"] = True  # chat's `logprobs` is a bool; the completions one is a count
            if continue_final:  # vLLM extension: leave the last assistant message open
                body.update(continue_final_message=True, add_generation_prompt=False)
            data = await self._post("/chat/completions", body)
            comps = [self._completion(c, (c.get("message") or {}).get("content") or "", chat_logprobs(c, params))
                     for c in sorted(data["choices"], key=lambda c: c.get("index", 0))]
            return Result(outputs=comps, prompt_tokens=prompt_tokens(data))
        except Exception as e:  # noqa: BLE001 - a failed request is an error on its row, never a crash
            return Result(error=describe_error(e))

    def _prompt_body(self, prompt: Any) -> dict[str, Any]:
        if isinstance(prompt, str):
            body = {"model": self.request_model, "prompt": prompt}
            if self.vllm_extensions:  # the text is already rendered (chat template included): no extra BOS
                body["add_special_tokens"] = False
            return body
        return {"model": self.request_model, "prompt": [int(t) for t in prompt]}

    def _sampling_body(self, p: SamplingParams) -> dict[str, Any]:
        body: dict[str, Any] = {"temperature": p.temperature, "top_p": p.top_p, "max_tokens": p.max_tokens, "n": p.n}
        if p.frequency_penalty:
            body["frequency_penalty"] = p.frequency_penalty
        if p.stop:
            body["stop"] = list(p.stop)
        if p.seed is not None:
            body["seed"] = p.seed
        if p.logprobs:
            body["logprobs"] = 1  # completions: top-1 alongside the sampled token (0 is falsy to some servers)
        if self.vllm_extensions:
            body["return_token_ids"] = True
            if p.logprobs:
                body["return_tokens_as_token_ids"] = True
        return body

    def _completion(self, choice: dict, text: str, lp: tuple[list[float], list[int] | None] | None) -> Completion:
        # Token ids, best source first: the server's own, the ids spelled in the logprobs, re-tokenizing.
        ids = choice.get("token_ids")
        if ids is None and lp is not None and lp[1] is not None:
            ids = lp[1]
        if ids is None:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"] if self.tokenizer else []
        reason = choice.get("finish_reason") or "stop"
        stop = choice.get("stop_reason")  # vLLM's servers say which stop string matched; others do not
        return Completion(text, [int(t) for t in ids], lp[0] if lp else None, reason,
                          stop if isinstance(stop, str) else None)

    def _token_id(self, token: str) -> int:
        if token.startswith(TOKEN_ID_PREFIX):
            return int(token[len(TOKEN_ID_PREFIX):])
        # A decoded token string: map it back through the local tokenizer when it is one token.
        self._need_tokenizer("mapping token strings to ids")
        ids = self.tokenizer(token, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise RequestFailed(f"token {token!r} does not map to a single token id; "
                                f"run the server with --return-tokens-as-token-ids")
        return ids[0]

    def _need_tokenizer(self, what: str) -> None:
        if self.tokenizer is None:
            raise RequestFailed(f"{what} needs a local tokenizer; pass tokenizer= (a model directory or alias)")

    # ---- HTTP with retries -----------------------------------------------------------------------
    async def _post(self, path: str, body: dict) -> dict:
        import httpx

        for attempt in range(self.max_retries + 1):
            wait_s = None
            async with self._sem:
                i = self._pick_url()  # after the wait for a slot, so the load it sees is current
                url = self.base_urls[i] + path
                self._inflight[i] += 1
                try:
                    r = await self._client.post(url, json=body)
                except httpx.TransportError as e:  # timeouts, refused/reset connections, protocol errors
                    err = f"{type(e).__name__} from {url}: {e}".rstrip(": ")
                    r = None
                finally:
                    self._inflight[i] -= 1
            if r is not None:
                if r.status_code == 200:
                    return r.json()
                err = f"HTTP {r.status_code} from {url}: {server_message(r)}"
                if r.status_code != 429 and r.status_code < 500:
                    raise RequestFailed(err)  # the request itself is wrong: retrying cannot help
                wait_s = retry_after(r.headers.get("retry-after"))
            self._cool_until[i] = time.monotonic() + _COOLDOWN
            if attempt == self.max_retries:
                break
            # Exponential backoff with full jitter in [0.5, 1.5) x, unless the server said how long to wait.
            delay = wait_s if wait_s is not None else self.backoff * 2 ** attempt * (0.5 + random.random())
            await asyncio.sleep(delay)
        raise RequestFailed(f"{err} (gave up after {self.max_retries + 1} attempts)")

    def _pick_url(self) -> int:
        """A URL that has not just failed, then the fewest requests in flight, then round-robin."""
        n, now = len(self.base_urls), time.monotonic()
        i = min(range(n), key=lambda j: (self._cool_until[j] > now, self._inflight[j], (j - self._rr) % n))
        self._rr = (i + 1) % n
        return i

    async def _fetch_max_model_len(self) -> int:
        """vLLM reports `max_model_len` in `GET /v1/models`; other servers get the default."""
        for base in self.base_urls:
            try:
                models = (await self._client.get(base + "/models", timeout=10)).json()["data"]
            except Exception as e:  # noqa: BLE001 - not every server lists models; fall back
                log.warning("GET %s/models failed (%s)", base, e)
                continue
            ours = [m for m in models if m.get("id") == self.request_model] or (models if len(models) == 1 else [])
            if ours and ours[0].get("max_model_len"):
                return int(ours[0]["max_model_len"])
        return DEFAULT_MAX_MODEL_LEN

    # ---- loop plumbing ---------------------------------------------------------------------------
    def _call(self, coro: Awaitable, timeout: float | None = None):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _gather(self, factories: list[Callable[[], Awaitable]]) -> list:
        async def run():
            return await asyncio.gather(*(f() for f in factories))
        return self._call(run())
