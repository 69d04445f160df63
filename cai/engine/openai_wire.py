"""The wire format of OpenAI-compatible servers, as pure helpers of `OpenAIEngine`: base URLs, the local
tokenizer, per-prompt sampling parameters, log-probs of completion and chat choices, `Retry-After`, and
one-line error texts."""
from __future__ import annotations

import email.utils
import functools
import logging
import time
from collections.abc import Awaitable

from cai.engine.base import SamplingParams, Scored
from cai.models import model_hash, resolve_model

TOKEN_ID_PREFIX = "token_id:"  # vLLM's `return_tokens_as_token_ids` spelling of a token
log = logging.getLogger("cai.engine.openai_engine")  # one logger name for the backend
MAX_RETRY_AFTER = 300.0  # seconds; a server asking for longer is treated as asking for this


class RequestFailed(Exception):
    """A request that failed for good: a non-retryable status, or retries exhausted."""


def v1_url(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


def load_tokenizer(model: str, tokenizer: str | None):
    """(tokenizer or None, model_hash). The hash covers the weights when `model` is a local model."""

    try:
        path = resolve_model(tokenizer or model)
        tok = auto_tokenizer(str(path))
    except Exception as e:  # noqa: BLE001 - a hosted model name has no local tokenizer; that is allowed
        log.warning("no local tokenizer for %r (%s): text prompts and chat rendering need one",
                    tokenizer or model, e)
        return None, "openai:" + model
    has_weights = any(f.suffix in (".safetensors", ".bin") for f in path.iterdir())
    if tokenizer in (None, model) and has_weights:
        return tok, model_hash(path)
    return tok, "openai:" + model


@functools.lru_cache(maxsize=8)
def auto_tokenizer(path: str):
    """Shared by engines on the same model (e.g. one per server pool), so each loads it once."""
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(path)


def per_prompt(params, n: int) -> list[SamplingParams]:
    plist = list(params) if isinstance(params, (list, tuple)) else [params] * n
    if len(plist) != n:
        raise ValueError(f"{len(plist)} sampling params for {n} prompts")
    return plist


def completion_logprobs(choice: dict, p: SamplingParams):
    """`/v1/completions` logprobs -> (per-token logprobs, token ids if spelled as `token_id:N`)."""
    lp = choice.get("logprobs")
    if not p.logprobs or not lp:
        return None
    tokens = lp.get("tokens") or []
    ids = [int(t[len(TOKEN_ID_PREFIX):]) for t in tokens] \
        if tokens and all(t.startswith(TOKEN_ID_PREFIX) for t in tokens) else None
    return [float(v) for v in lp["token_logprobs"]], ids


def chat_logprobs(choice: dict, p: SamplingParams):
    """`/v1/chat/completions` logprobs (`{"content": [{"token", "logprob"}, ...]}`) -> same as above."""
    lp = choice.get("logprobs")
    if not p.logprobs or not lp:
        return None
    content = lp.get("content") or []
    tokens = [c["token"] for c in content]
    ids = [int(t[len(TOKEN_ID_PREFIX):]) for t in tokens] \
        if tokens and all(t.startswith(TOKEN_ID_PREFIX) for t in tokens) else None
    return [float(c["logprob"]) for c in content], ids


def prompt_tokens(data: dict) -> int:
    return int((data.get("usage") or {}).get("prompt_tokens") or 0)


def server_message(r) -> str:
    try:
        err = r.json().get("error", r.json())
        msg = err.get("message", err) if isinstance(err, dict) else err
    except Exception:  # noqa: BLE001 - the body is not JSON: use it as text
        msg = r.text
    return str(msg).strip()[:500] or r.reason_phrase


def retry_after(value: str | None) -> float | None:
    """`Retry-After` is either seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    try:
        secs = float(value)
    except ValueError:
        try:
            secs = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(secs, 0.0), MAX_RETRY_AFTER)


def describe_error(e: Exception) -> str:
    return str(e) if isinstance(e, RequestFailed) else f"{type(e).__name__}: {e}"


async def as_scored(coro: Awaitable) -> Scored:
    """A scoring row's value, or its failure as the row's error (a failed row, not a failed batch)."""
    try:
        return Scored(await coro)
    except Exception as e:  # noqa: BLE001 - a failed row, not a failed batch
        return Scored(error=describe_error(e))
