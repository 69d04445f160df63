"""What PPO/RLOO need around the loop: prompts, batched sampling on an engine, the padded rollout batch
and the reward sources (the per-token forwards over that batch live in `cai.train.forward`).

Layout of a rollout batch (B rows): prompts left-padded to P tokens, responses right-padded to R tokens,
so column P−1+t of the logits predicts response token t for every row, and `mask` (B, R) marks the real
response tokens (through the first EOS).
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cai.constitution import load_constitution
from cai.data.sources import as_messages, read_rows
from cai.engine.base import SamplingParams
from cai.engine.config import engine_config
from cai.errors import InputError
from cai.feedback.score import score_responses
from cai.stage import open_engine
from cai.train import batching, common, data, forward, losses
from cai.train.config import config_error
from cai.train.rm import load_reward_model

# ---- prompts ------------------------------------------------------------------------------------------


def load_prompt_rows(data, tok) -> tuple[list[Any], list[list[int]], int]:
    """(prompts as given, their chat-template token ids, how many were dropped as too long)."""
    if not data.path:
        raise InputError("no prompts given (set data.path)", field="data.path")
    rows = [r for _, r in read_rows(Path(data.path).expanduser(), config=data.config or None)]
    if not rows:
        raise InputError("no prompts: the source is empty", file=data.path, field="data.path")
    prompts = []
    for i, row in enumerate(rows):
        value = row.get(data.column)
        if value is None and "messages" in row:  # an SFT set: the conversation before its last answer
            msgs = list(row["messages"])
            while msgs and msgs[-1]["role"] == "assistant":
                msgs.pop()
            value = msgs or None
        if value is None or (isinstance(value, str) and not value.strip()):
            raise InputError(f"row {i + 1} has no {data.column!r} (columns: {', '.join(sorted(row))})",
                             file=data.path, field="data.column")
        prompts.append(value)
        if data.limit and len(prompts) >= data.limit:
            break
    kept, ids, dropped = [], [], 0
    for pr in prompts:
        msgs = [{"role": "user", "content": pr}] if isinstance(pr, str) else \
            [{"role": m["role"], "content": m["content"]} for m in pr]
        x = list(tok.apply_chat_template(msgs, tokenize=True, return_dict=True, add_generation_prompt=True)["input_ids"])
        if len(x) > data.max_prompt_length:
            dropped += 1
            continue
        kept.append(pr)
        ids.append(x)
    if not kept:
        raise InputError(f"every prompt is longer than max_prompt_length={data.max_prompt_length}",
                         field="data.max_prompt_length")
    return kept, ids, dropped


# ---- sampling -----------------------------------------------------------------------------------------


@dataclass
class Batch:
    """One iteration's rollouts (B rows); tensors on CPU."""

    prompt_index: list[int]  # (B,) index into the prompt list
    input_ids: torch.Tensor  # (B, P+R) left-padded prompt + right-padded response
    attention_mask: torch.Tensor  # (B, P+R)
    response_ids: torch.Tensor  # (B, R) truncated after the first EOS, then padded
    mask: torch.Tensor  # (B, R) 1 on real response tokens
    has_eos: torch.Tensor  # (B,) bool
    engine_logps: torch.Tensor  # (B, R) raw (temperature 1) log-probs the engine reported, 0 on padding
    texts: list[str]
    P: int

    @property
    def lengths(self) -> torch.Tensor:
        return self.mask.sum(-1)


def sample(engine, prompt_ids: list[list[int]], index: list[int], seeds: list[int], rollout, tok,
           eos_ids: list[int]) -> Batch:
    """Sample one response per (prompt, seed) in ONE engine batch, and lay the batch out for training."""
    params = [SamplingParams(temperature=rollout.temperature, max_tokens=rollout.max_new_tokens, seed=s,
                             logprobs=True) for s in seeds]
    results = engine.generate([prompt_ids[i] for i in index], params)
    bad = [r.error for r in results if not r.ok]
    if bad:
        raise RuntimeError(f"rollout failed: {bad[0]}")
    comps = [r.outputs[0] for r in results]
    P = max(len(prompt_ids[i]) for i in index)
    R = max(1, max(len(c.token_ids) for c in comps))
    pad = tok.pad_token_id
    B = len(index)
    prompt = torch.full((B, P), pad, dtype=torch.long)
    pmask = torch.zeros((B, P), dtype=torch.long)
    resp = torch.full((B, R), pad, dtype=torch.long)
    elp = torch.zeros((B, R))
    for b, (i, c) in enumerate(zip(index, comps)):
        x = prompt_ids[i]
        prompt[b, P - len(x):], pmask[b, P - len(x):] = torch.tensor(x), 1
        if c.token_ids:
            resp[b, :len(c.token_ids)] = torch.tensor(c.token_ids)
            elp[b, :len(c.logprobs or [])] = torch.tensor(c.logprobs or [], dtype=torch.float32)
    resp, mask, has_eos = losses.truncate_after_eos(resp, eos_ids, pad)
    resp = torch.where(mask.bool(), resp, torch.full_like(resp, pad))
    elp = elp * mask
    texts = tok.batch_decode([r[m.bool()].tolist() for r, m in zip(resp, mask)], skip_special_tokens=True)
    return Batch(list(index), torch.cat([prompt, resp], 1), torch.cat([pmask, mask], 1), resp, mask, has_eos,
                 elp, texts, P)


# ---- rewards ------------------------------------------------------------------------------------------


class RMReward:
    """A `cai train rm` reward model, frozen, with its gain/bias normalisation. Re-renders prompt + response
    with the RM's chat template, as the RM saw its training pairs."""

    def __init__(self, path: Path, dtype: str, normalize: bool, batch_size: int, device):
        self.tok = common.load_tokenizer(path)
        self.model = forward.LastTokenReward(load_reward_model(path, dtype, self.tok.pad_token_id)).to(device).eval()
        self.model.requires_grad_(False)
        self.gain, self.bias = 1.0, 0.0
        norm = path / "reward_normalization.json"
        if normalize:
            if not norm.is_file():
                raise InputError("no reward_normalization.json (train the RM with `cai train rm`, or set "
                                 "reward.normalize: false)", file=path, field="reward.normalize")
            n = json.loads(norm.read_text())
            self.gain, self.bias = float(n["gain"]), float(n["bias"])
        self.batch_size, self.device = batch_size, device

    @torch.no_grad()
    def __call__(self, prompts: list, responses: list[str]) -> tuple[list[float], list[float]]:
        seqs = []
        for p, r in zip(prompts, responses):
            msgs = as_messages(p) + [{"role": "assistant", "content": r}]
            seqs.append(data.chat_ids(self.tok, msgs))
        raw = []
        for lo in range(0, len(seqs), self.batch_size):
            chunk = seqs[lo:lo + self.batch_size]
            ids = batching.pad_right(chunk, self.tok.pad_token_id).to(self.device)
            m = batching.pad_right([[1] * len(s) for s in chunk], 0).to(self.device)
            raw += self.model(ids, m).tolist()
        return raw, [self.gain * x + self.bias for x in raw]


class JudgeReward:
    """d-RLAIF: a judge rates each response with the constitution's score rubric (reward in [-1, 1])."""

    def __init__(self, cfg):
        self.constitution = load_constitution(cfg.reward.constitution)
        self.engine = open_engine(engine_config(cfg.reward.model, cfg.reward.judge_engine), seed=cfg.run.seed)

    def __call__(self, prompts: list, responses: list[str]) -> tuple[list[float], list[float]]:
        out = score_responses(self.engine, self.constitution, prompts, responses)
        vals = [x.value if x.ok else math.nan for x in out]  # a failed rating counts as a failure (NaN)
        return vals, vals


class CallableReward:
    """A Python `reward_fn(prompts, responses) -> list[float]`: a supported API, not only a test hook."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, prompts: list, responses: list[str]) -> tuple[list[float], list[float]]:
        out = [float(x) for x in self.fn(list(prompts), list(responses))]
        if len(out) != len(responses):
            raise ValueError(f"reward_fn returned {len(out)} rewards for {len(responses)} responses")
        return out, out


def import_callable(spec: str):
    """`package.module:function` or `path/to/file.py:function` -> the function (errors name reward.fn)."""
    mod_name, sep, attr = spec.rpartition(":")
    if not sep or not mod_name or not attr:
        raise InputError(f"{spec!r} must look like module:function or file.py:function", field="reward.fn")
    try:
        if mod_name.endswith(".py"):
            specm = importlib.util.spec_from_file_location(Path(mod_name).stem, mod_name)
            if specm is None or not Path(mod_name).is_file():
                raise FileNotFoundError(mod_name)
            mod = importlib.util.module_from_spec(specm)
            specm.loader.exec_module(mod)
        else:
            mod = importlib.import_module(mod_name)
        return getattr(mod, attr)
    except (ImportError, FileNotFoundError, AttributeError) as e:
        raise InputError(f"cannot import {spec!r}: {type(e).__name__}: {e}", field="reward.fn") from None


def make_reward(cfg, reward_fn, device):
    """The reward source named by `cfg.reward.kind` (a `reward_fn` given in Python wins)."""
    if reward_fn is not None:
        return CallableReward(reward_fn)
    kind = cfg.reward.kind
    if kind == "rm":
        return RMReward(common.resolve(cfg.reward.model, "reward.model"), cfg.run.dtype, cfg.reward.normalize,
                        cfg.reward.batch_size, device)
    if kind == "judge":
        return JudgeReward(cfg)
    if not cfg.reward.fn:
        raise config_error(cfg, "reward.fn", "kind callable needs reward.fn (module:function), or pass "
                           "reward_fn= to train_ppo")
    return CallableReward(import_callable(cfg.reward.fn))
