"""The engine interface every stage talks to: chat/text generation and log-prob scoring.

Three backends implement it (vLLM in-process, transformers `generate`, OpenAI-compatible HTTP). Stages
never loop over examples calling the engine: they either hand a whole batch to `generate`/`score`, or
feed requests continuously with `submit` + `poll`, so a conversation's next step enters the engine the
moment its previous step finishes (no barrier between stages).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

Message = dict[str, str]
T = TypeVar("T")


@dataclass(frozen=True)
class SamplingParams:
    """Sampling parameters, with OpenAI-compatible names."""

    temperature: float = 0.7
    """Softmax temperature; 0 means greedy."""
    top_p: float = 1.0
    """Nucleus sampling mass."""
    max_tokens: int = 256
    """Generation stops after this many new tokens (finish_reason "length")."""
    n: int = 1
    """Number of completions per prompt."""
    stop: tuple[str, ...] = ()
    """Stop strings (not included in the text)."""
    seed: int | None = None
    """Per-request seed: the same prompt, params and seed give the same sample on a given engine."""
    logprobs: bool = False
    """Return the log-prob of each sampled token (raw model distribution, before temperature)."""
    frequency_penalty: float = 0.0
    """Subtract this × (times the token was already generated in this completion) from its logit before
    temperature (OpenAI's and vLLM's definition; prompt tokens are not counted). Small models caught in a
    loop ("The advice ... The advice ...") run to max_tokens; a penalty of 0.3–0.5 breaks most loops."""

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.max_tokens < 1 or self.n < 1:
            raise ValueError("max_tokens and n must be >= 1")
        if not -2 <= self.frequency_penalty <= 2:
            raise ValueError("frequency_penalty must be in [-2, 2]")
        if isinstance(self.stop, (list, str)):
            object.__setattr__(self, "stop", tuple([self.stop] if isinstance(self.stop, str) else self.stop))

    def replace(self, **kw) -> "SamplingParams":
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["stop"] = list(self.stop)
        if not self.frequency_penalty:  # added later: keep the request keys (and caches) of earlier runs
            del d["frequency_penalty"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SamplingParams":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown sampling parameter(s): {', '.join(sorted(unknown))}")
        return cls(**{k: tuple(v) if k == "stop" else v for k, v in d.items()})


@dataclass
class Completion:
    text: str
    token_ids: list[int]
    logprobs: list[float] | None
    finish_reason: str  # "stop" | "length" | "error"
    stop: str | None = None  # the stop string that ended it (None: end of turn, length, or not reported)


@dataclass
class Result:
    """The outcome of one request. `error` is set (and `outputs` empty) when the request failed."""

    outputs: list[Completion] = field(default_factory=list)
    prompt_tokens: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def text(self) -> str:
        return self.outputs[0].text


@dataclass(frozen=True)
class Scored(Generic[T]):
    """The outcome of one scoring request (`top_logprobs`, `score_continuations`): its `value`, or the
    `error` that stopped it (`value` is then None). A failed row is a value with an error, never a bare
    string that callers must recognise by its type."""

    value: T | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@runtime_checkable
class WeightSync(Protocol):
    """An engine whose served weights can be replaced in place: what PPO/RLOO rollouts need between steps
    (`cai.engine.weight_sync.sync_weights`). The vLLM and transformers engines implement it."""

    def load_weights(self, named_tensors: Iterable[tuple[str, Any]]) -> None:
        """Load `(checkpoint name, tensor)` pairs (the names `save_pretrained` writes) over the current weights;
        afterwards the engine samples from exactly those weights."""
        ...


@dataclass
class Request:
    id: str
    prompt: Any  # str | list[int]
    params: SamplingParams


def request_key(model_hash: str, prompt: Any, params: SamplingParams) -> str:
    """Content address of a generation request: weights + exact prompt + sampling params (incl. seed)."""
    blob = json.dumps([model_hash, prompt, params.to_dict()], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class Engine:
    """Base class holding the shared tokenizer logic. Backends implement `submit`, `poll`,
    `has_unfinished` and `top_logprobs`; `generate`, `chat` and the scorers are built on them."""

    name = "base"
    reports_stop = False
    """`Completion.stop` names the stop string that ended a completion (a stage can then stop a step early
    on a marker and still tell that it did)."""
    model_id: str
    model_hash: str
    tokenizer: Any
    max_model_len: int

    # ---- continuous feed -------------------------------------------------------------------------
    def submit(self, request_id: str, prompt: Any, params: SamplingParams) -> None:
        raise NotImplementedError

    def poll(self) -> list[tuple[str, Result]]:
        """Advance the engine; return the requests that finished since the last poll (maybe none)."""
        raise NotImplementedError

    def has_unfinished(self) -> bool:
        raise NotImplementedError

    # ---- batch -----------------------------------------------------------------------------------
    def generate(self, prompts: Sequence[Any], params: SamplingParams | Sequence[SamplingParams]) -> list[Result]:
        """One batch: all prompts enter the engine together. Results are in prompt order."""
        plist = list(params) if isinstance(params, (list, tuple)) else [params] * len(prompts)
        for i, (p, sp) in enumerate(zip(prompts, plist)):
            self.submit(f"_b{i}", p, sp)
        out: dict[str, Result] = {}
        while len(out) < len(prompts):
            for rid, res in self.poll():
                out[rid] = res
        return [out[f"_b{i}"] for i in range(len(prompts))]

    def chat(self, conversations: Sequence[list[Message]], params, *, continue_final_message: bool = False
             ) -> list[Result]:
        return self.generate([self.format_chat(c, continue_final_message=continue_final_message)
                              for c in conversations], params)

    def stream(self, requests: Iterable[Request]):
        """Yield (id, Result) as requests finish; new requests may be added with `submit` meanwhile."""
        for r in requests:
            self.submit(r.id, r.prompt, r.params)
        while self.has_unfinished():
            yield from self.poll()

    # ---- scoring ---------------------------------------------------------------------------------
    def top_logprobs(self, prompts: Sequence[Any], k: int = 20) -> list[Scored[dict[int, float]]]:
        """For each prompt, the top-k next-token log-probs as {token_id: logprob}, or the row's error."""
        raise NotImplementedError

    def score_continuations(self, prompts: Sequence[Any], continuations: Sequence[list[int]]
                            ) -> list[Scored[list[float]]]:
        """Log-prob of each given continuation token after its prompt (teacher forcing), or the row's error."""
        raise NotImplementedError

    # ---- text <-> tokens -------------------------------------------------------------------------
    def format_chat(self, messages: list[Message], *, continue_final_message: bool = False) -> list[int]:
        """Token ids of a conversation rendered with the model's own chat template."""
        return format_chat(self.tokenizer, messages, continue_final_message=continue_final_message)

    def encode(self, prompt: Any) -> list[int]:
        if isinstance(prompt, str):
            # The text is already fully rendered (chat template included): add no extra BOS.
            return self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        return list(prompt)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def format_chat(tokenizer, messages: list[Message], *, continue_final_message: bool = False) -> list[int]:
    text = format_chat_text(tokenizer, messages, continue_final_message=continue_final_message)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def format_chat_text(tokenizer, messages: list[Message], *, continue_final_message: bool = False) -> str:
    """Render with the tokenizer's chat template. With `continue_final_message`, the last (assistant)
    message stays open so that generation continues it, e.g. after `The answer is: (`."""
    return tokenizer.apply_chat_template(
        messages, tokenize=False,
        add_generation_prompt=not continue_final_message,
        continue_final_message=continue_final_message,
    )
