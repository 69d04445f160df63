"""Plumbing every dataset-producing stage shares: engine flags, provenance, progress and summaries.

Stages (generate, critique, sample, label) differ in what they ask the engine; how they open the engine,
cache requests, resume runs and report progress is written once, here.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from typing import Any

from cai import __version__
from cai.config import apply_overrides, dump_yaml, from_data
from cai.data.sources import as_messages
from cai.data.store import RequestCache, check_output_dir, default_cache_path
from cai.engine import default_engine, make_engine
from cai.engine.base import Engine
from cai.engine.cached import CachedEngine
from cai.engine.config import EngineConfig, EngineSpec
from cai.errors import InputError
from cai.yamlio import load_yaml


def add_engine_args(p: argparse.ArgumentParser, *, model_flag: str = "--model", default_model: str = "") -> None:
    """The engine flags. Every default is None (store_true: False), so a flag the user left out sets nothing
    and the stage config's own default (or its `--config` file) stands; help reads those defaults."""
    d = EngineSpec()
    g = p.add_argument_group("engine")
    g.add_argument(model_flag, dest="model", default=None,
                   help="model: built-in alias, local HF dir or hub id"
                   + (f" (default {default_model})" if default_model else ""))
    g.add_argument("--engine", choices=["vllm", "hf", "openai"], default=None,
                   help="vllm (default when installed), hf (transformers) or openai (HTTP server)")
    g.add_argument("--base-url", action="append", default=None, help="openai engine: server URL (repeatable)")
    g.add_argument("--max-model-len", type=int, default=None, help=f"context length (default {d.max_model_len})")
    g.add_argument("--dtype", default=None, help=f"weight dtype (default {d.dtype})")
    g.add_argument("--engine-arg", action="append", default=None, metavar="KEY=VALUE",
                   help="extra engine argument passed through, e.g. tensor_parallel_size=2 (JSON values)")
    g.add_argument("--cache", default=None, help="request cache (SQLite); default ~/.cache/cai/requests.sqlite")
    g.add_argument("--no-cache", action="store_true", help="do not read or write the request cache")


# engine flag dest -> field of an `EngineSpec` (`--engine-arg KEY=VALUE` sets `args.KEY`)
ENGINE_FLAGS = {"engine": "backend", "base_url": "base_urls", "max_model_len": "max_model_len", "dtype": "dtype",
                "cache": "cache", "no_cache": "no_cache"}


def add_config_args(p: argparse.ArgumentParser) -> None:
    """`--config FILE.yaml`, `KEY=VALUE` overrides and `--print-config` for a stage whose config is a dataclass."""
    g = p.add_argument_group("config")
    g.add_argument("--config", default=None, metavar="FILE.yaml",
                   help="the stage's config as YAML (what --print-config writes); flags given override it")
    g.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="dotted config overrides, applied last, e.g. rounds=3 engine.backend=hf")
    g.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")


def given(value: Any) -> bool:
    """A flag the user gave: flags default to None (store_true ones to False)."""
    return value is not None and value is not False


def stage_config_from_args(cls: type, args, flags: dict[str, str | tuple], *,
                           switches: dict[str, tuple[str, Any]] | None = None, engines: tuple[str, ...] = ("engine",)
                           ) -> Any:
    """Build the stage config `cls` from, in order: its dataclass defaults, `--config FILE.yaml`, the flags
    the user gave (`flags`: flag dest -> dotted field, or a tuple of fields it sets together; `switches`:
    on/off flag dest -> (dotted field, the value it sets), e.g. `--no-few-shot` -> ("few_shot", False); the
    engine flags set each `EngineSpec` section named in `engines`), then the `KEY=VALUE` overrides. A bad
    value names the flag that gave it, or FILE:LINE:COL and the field when it came from the file."""
    data, marks = load_yaml(args.config) if args.config else ({}, {})
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InputError("the config must be a mapping", file=args.config, line=1, col=1)
    from_flag: dict[str, str] = {}

    def put(dotted: str, value: Any, flag: str) -> None:
        keys = dotted.split(".")
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = list(value) if isinstance(value, tuple) else value
        from_flag[dotted] = flag

    def flag_name(dest: str) -> str:
        return "--" + dest.replace("_", "-")

    for dest, key in flags.items():
        value = getattr(args, dest)
        if given(value):
            for dotted in key if isinstance(key, tuple) else (key,):
                put(dotted, value, flag_name(dest))
    for dest, (dotted, value) in (switches or {}).items():
        if getattr(args, dest):
            put(dotted, value, flag_name(dest))
    for section in engines:
        for dest, name in ENGINE_FLAGS.items():
            if given(getattr(args, dest)):
                put(f"{section}.{name}", getattr(args, dest), flag_name(dest))
        for k, v in parse_engine_args(args.engine_arg or []).items():
            put(f"{section}.args.{k}", v, "--engine-arg")
    overridden = apply_overrides(data, args.overrides)
    try:
        return from_data(cls, data, file=args.config, marks=marks,
                         overridden={tuple(k.split(".")) for k in from_flag} | overridden)
    except InputError as e:
        flag = from_flag.get(e.field or "") if e.file is None else None
        if flag and tuple(e.field.split(".")) not in overridden:
            raise InputError(e.message.removesuffix(" (from the command line)"), field=flag) from None
        raise


def engine_spec_from_args(args, base: EngineSpec) -> EngineSpec:
    """`base` with the engine flags the user gave (commands that take no `--config`: contrast, eval values)."""
    changes = {name: getattr(args, dest) for dest, name in ENGINE_FLAGS.items() if given(getattr(args, dest, None))}
    if isinstance(changes.get("base_urls"), list):
        changes["base_urls"] = tuple(changes["base_urls"])
    if getattr(args, "engine_arg", None):
        changes["args"] = {**base.args, **parse_engine_args(args.engine_arg)}
    return dataclasses.replace(base, **changes)


def print_config(cfg: Any) -> None:
    """The resolved config as YAML, which `--config` reads back."""
    print(dump_yaml(cfg), end="")


def config_run(args, build, *, needs_out: bool = True) -> Any:
    """The stage config the command line describes (`build(args)`), or None once `--print-config` has
    printed it. A config to run must name its output directory (unless `needs_out` is False)."""
    cfg = build(args)
    if args.print_config:
        print_config(cfg)
        return None
    if needs_out and not cfg.out:
        raise InputError("the following arguments are required: --out (or out: in the config)", field="--out")
    return cfg


def check_sampling_flags(args) -> None:
    """Sampling flags given are user input: a bad value is a one-line error naming the flag (exit 2). `--limit`
    is checked here because the configs read 0 as "all", which a user typing `--limit 0` does not mean."""
    checks = [("--n", lambda v: v >= 1, "must be >= 1"), ("--temperature", lambda v: v >= 0, "must be >= 0"),
              ("--top-p", lambda v: 0 < v <= 1, "must be in (0, 1]"), ("--max-tokens", lambda v: v >= 1, "must be >= 1"),
              ("--limit", lambda v: v >= 1, "must be >= 1")]
    for flag, ok, msg in checks:
        value = getattr(args, flag[2:].replace("-", "_"), None)
        if value is not None and not ok(value):
            raise InputError(f"{msg}, got {value}", field=flag)


def check_out(out: str) -> None:
    """A stage run from Python or a pipeline must name its output directory."""
    if not out:
        raise InputError("is required (the pipeline sets it)", field="out")


def parse_engine_args(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise InputError(f"expected KEY=VALUE, got {item!r}", field="--engine-arg")
        k, v = item.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def engine_config_from_args(args) -> EngineConfig:
    """The `EngineConfig` the engine flags (`add_engine_args`) describe; the one place flags become one."""
    if args.engine == "openai" and not args.base_url:
        raise InputError("the openai engine needs --base-url", field="--base-url")
    d = EngineConfig()
    return EngineConfig(model=args.model or d.model, backend=args.engine or "", dtype=args.dtype or d.dtype,
                        max_model_len=args.max_model_len or d.max_model_len, base_urls=tuple(args.base_url or ()),
                        cache=args.cache or "", no_cache=args.no_cache,
                        engine_args=parse_engine_args(args.engine_arg or []))


def open_engine(cfg: EngineConfig, *, seed: int = 0, work_tokens: int | None = None,
                text_only: bool = False, max_seqs: int | None = None) -> CachedEngine:
    """Open the engine `cfg` describes, behind the request cache. Three facts about the job let vLLM on CPU
    choose for it: `work_tokens`, what it may generate, between compiling and running eagerly
    (`CPU_COMPILE_MIN_TOKENS`); `text_only`, a job that reads no log-probs, runs `dtype: auto` in bf16 where
    the CPU has it (`CPU_TEXT_DTYPE`); `max_seqs`, the requests it has at most at once, sizes the KV cache
    (`cai.engine.memory`)."""
    kw = dict(cfg.engine_args)
    backend = cfg.backend or default_engine()
    if backend == "openai":
        kw["base_urls"] = list(cfg.base_urls)
    else:
        kw.update(max_model_len=cfg.max_model_len, dtype=cfg.dtype, seed=seed)
    if backend == "vllm":
        kw.update(work_tokens=work_tokens, text_only=text_only, max_seqs=max_seqs)
    engine = make_engine(backend, cfg.model, **kw)
    cache = None if cfg.no_cache else RequestCache(cfg.cache or default_cache_path())
    return CachedEngine(engine, cache)


def as_engine(engine: Engine | EngineConfig, *, seed: int = 0, out: str | None = None, inputs=(),
              work_tokens: int | None = None, text_only: bool = False, max_seqs: int | None = None) -> Engine:
    """An `Engine` as it is, or the one an `EngineConfig` describes, opened once `out` is known to be a
    directory the stage may write (checked before the model loads: a mistake costs no model load)."""
    if not isinstance(engine, EngineConfig):
        return engine
    if out:
        check_output_dir(out, list(inputs))
    return open_engine(engine, seed=seed, work_tokens=work_tokens, text_only=text_only, max_seqs=max_seqs)


def engine_from_args(args, *, seed: int = 0) -> CachedEngine:
    """Open the engine the flags describe (CLI commands that have no stage function: calibration)."""
    return open_engine(engine_config_from_args(args), seed=seed)


def request_seed(seed: int, key: str) -> int:
    """A per-request seed from the run seed and a stable request key (e.g. `"rt-0001:critique:2"`), so a
    request samples the same text whatever batch it lands in, and a rerun can hit the request cache."""
    import hashlib
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:4], "little")


def provenance(engine, *, seed: int, sampling: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model_id": engine.model_id, "model_hash": engine.model_hash, "engine": engine.name,
            "seed": seed, "sampling": json.dumps(sampling, sort_keys=True), "cai_version": __version__, **extra}


class Progress:
    """A tqdm bar over the engine requests a stage still has to send (answers, steps, pairs): what costs
    time. Rows finished before a resume are left out of `total`, and a request the request cache answers,
    or one that needs no engine at all, is taken off the total (`skip`) instead of counted as done, so
    the rate and the ETA are those of the engine's work."""

    def __init__(self, total: int, desc: str, engine=None, unit: str = "req"):
        from tqdm.auto import tqdm
        self.bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True)
        self.engine, self.t0 = engine, time.perf_counter()
        self._tok0 = getattr(engine, "generated_tokens", 0)

    def update(self, n: int = 1, *, request_id: str | None = None) -> None:
        """`n` requests finished; one the request cache answered (`request_id` in the engine's last poll's
        hits) cost no time and is skipped instead."""
        if request_id is not None and request_id in getattr(self.engine, "last_hits", ()):
            self.skip(n)
            return
        self.bar.update(n)
        if self.engine is not None:
            self.bar.set_postfix_str(f"{self.tokens_per_s:.0f} tok/s", refresh=False)

    def skip(self, n: int = 1) -> None:
        """`n` units of the total turned out to need no engine time: off the total, not counted as done."""
        self.bar.total = max(self.bar.n, self.bar.total - n)
        self.bar.refresh()

    @property
    def tokens(self) -> int:
        return getattr(self.engine, "generated_tokens", 0) - self._tok0

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / max(self.elapsed, 1e-9)

    def close(self) -> None:
        self.bar.close()


def print_summary(title: str, rows: list[tuple[str, Any]]) -> None:
    """A small aligned table on stderr at the end of a run."""
    import sys
    width = max(len(k) for k, _ in rows)
    print(f"\n{title}", file=sys.stderr)
    for k, v in rows:
        print(f"  {k.ljust(width)}  {v}", file=sys.stderr)


def answer_prompts(engine, run, rows: list[dict[str, Any]], params, *, seed: int, system: str | None,
                   log_name: str, desc: str) -> dict[str, dict[str, Any]]:
    """Answer every prompt not yet finished in the run's record log, as one continuous batch (n samples
    each, per-prompt seeds); return all records `{id: {prompt, responses, finish_reasons, tokens, error}}`.
    Prompts whose request failed are retried on a rerun."""

    log = run.log(log_name)
    done = {k: v for k, v in log.load().items() if not v.get("error")}
    todo = [r for r in rows if r["id"] not in done]
    bar = Progress(len(todo), desc, engine)
    by_id = {r["id"]: r for r in todo}
    for r in todo:
        engine.submit(r["id"], engine.format_chat(as_messages(r["prompt"], system)),
                      params.replace(seed=request_seed(seed, r["id"])))
    while engine.has_unfinished():
        for rid, res in engine.poll():
            rec = {"key": rid, "id": rid, "prompt": by_id[rid]["prompt"], "error": res.error,
                   "responses": [c.text for c in res.outputs],
                   "finish_reasons": [c.finish_reason for c in res.outputs],
                   "tokens": [len(c.token_ids) for c in res.outputs]}
            log.append(rec)
            done[rid] = rec
            bar.update(request_id=rid)
    bar.close()
    log.close()
    return done
