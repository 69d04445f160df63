"""SL-CAI critique stage: outputs, resume, incremental regeneration, failures and filters.

Most tests share the session's in-process vLLM engine on the tiny random model (3-6 prompts, 8 tokens a
step); the CLI is driven in-process through `cai.cli.main` with the engine patched in.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cai.constitution import PrincipleSampler, load_constitution
from cai.critique import CritiqueConfig, critique, plan
from cai.critique.config import first_filter
from cai.data.layout import read_config, read_manifest
from cai.data.store import RequestCache
from cai.engine.base import Engine, Result, SamplingParams
from cai.engine.cached import CachedEngine
from cai.errors import InputError

REPO = Path(__file__).resolve().parents[1]
PROMPTS = str(REPO / "data" / "red_team.jsonl")
SP = SamplingParams(temperature=0.8, max_tokens=8)


def cfg(rounds: int = 2, filters=(), **kw) -> CritiqueConfig:
    return CritiqueConfig(rounds=rounds, answer=SP, critique=SP, revision=SP, filters=filters, **kw)


def cached(engine, cache_path) -> CachedEngine:
    return CachedEngine(engine, RequestCache(cache_path))


def run(engine, out, n=3, config=None, constitution="harmless", **kw):
    return critique(prompts=PROMPTS, limit=n, out=out, constitution=constitution, config=config or cfg(),
                    engine=engine, progress=False, **kw)


def test_outputs_columns_principles_and_resume(vllm_engine, tmp_path, cache_path):
    import datasets
    eng = cached(vllm_engine, cache_path)
    m = run(eng, tmp_path / "out")
    assert (m["conversations"], m["kept"], m["errors"]) == (3, 3, 0)
    assert eng.engine_requests == 3 * (1 + 2 * 2) and eng.cache_hits == 0  # answer + 2 x (critique, revision)

    prefs = datasets.load_dataset(str(tmp_path / "out"), "prefs", split="train", cache_dir=str(tmp_path / "hf"))
    sft = datasets.load_dataset(str(tmp_path / "out"), "sft", split="train", cache_dir=str(tmp_path / "hf"))
    trace = datasets.load_dataset(str(tmp_path / "out"), "trace", split="train", cache_dir=str(tmp_path / "hf"))
    assert (len(prefs), len(sft), len(trace)) == (3, 3, 6)
    c = load_constitution("harmless")
    sampler = PrincipleSampler(c.critiques, 0)
    for p, s in zip(prefs, sft):
        assert p["prompt"] == [{"role": "user", "content": s["prompt"]}]
        assert [m["role"] for m in p["chosen"]] == [m["role"] for m in p["rejected"]] == ["assistant"]
        assert s["messages"] == p["prompt"] + p["chosen"]
        assert p["chosen"][0]["content"] == p["revision_response"] and p["rejected"][0]["content"] == p["init_response"]
        assert p["principle_ids"] == [sampler.sample(f"{p['id']}:{r}")[0].id for r in (1, 2)]
        assert p["constitution_hash"] == c.hash and p["cai_version"] and p["model_hash"] == vllm_engine.model_hash
        assert json.loads(p["sampling"])["critique"]["max_tokens"] == 8
    for t in trace:
        pr = c.critique(t["principle_id"])
        assert t["critique_request"] == pr.critique.strip() + " Answer in two or three sentences."
        assert t["revision_request"] == pr.revision.strip() + (f' Write only the new response to "{t["prompt"]}", in a '
                                                               'few sentences addressed to the user.')
        assert t["principle_hash"] == pr.hash and t["status"] == "kept" and t["error"] is None
        assert t["critique_tokens"] >= 1 and t["revision_finish_reason"] in ("stop", "length")
    # round 2 critiques round 1's revision: the HF-recipe columns hold the last round
    last = [t for t in trace if t["round"] == 2]
    assert [t["revision"] for t in last] == list(sft["revision_response"])

    # same command again: everything is finished in the run dir, nothing reaches the engine
    eng2 = cached(vllm_engine, cache_path)
    run(eng2, tmp_path / "out")
    assert (eng2.engine_requests, eng2.cache_hits) == (0, 0)
    assert read_config(tmp_path / "out", "prefs") == prefs.to_list()
    # a different configuration is refused, never silently overwritten
    with pytest.raises(InputError, match="different configuration.*rounds"):
        run(eng2, tmp_path / "out", config=cfg(rounds=1))


def test_incremental_edit_regenerates_only_what_the_principle_touched(vllm_engine, tmp_path, cache_path):
    n, rounds = 6, 2
    c = load_constitution("harmless")
    sampler = PrincipleSampler(c.critiques, 0)
    ids = [f"rt-{i:04d}" for i in range(1, n + 1)]
    drawn = {i: [sampler.sample(f"{i}:{r}")[0].id for r in range(1, rounds + 1)] for i in ids}
    edited = drawn["rt-0002"][1]  # a principle some conversation draws (in round 2 at least)
    # requests a rerun needs: from the edited principle's first round on, a critique and a revision per round
    expected = sum(2 * (rounds - d.index(edited)) for d in drawn.values() if edited in d)
    touched = {i for i, d in drawn.items() if edited in d}
    assert 0 < len(touched) < n

    eng = cached(vllm_engine, cache_path)
    run(eng, tmp_path / "a", n=n, config=cfg(rounds))
    assert eng.engine_requests == n * (1 + 2 * rounds)

    text = (REPO / "constitutions" / "harmless.yaml").read_text()
    old = c.critique(edited).critique.split()[0:6]
    yaml_path = tmp_path / "harmless-edited.yaml"
    yaml_path.write_text(text.replace(" ".join(old), "EDITED: " + " ".join(old), 1))
    c2 = load_constitution(str(yaml_path))
    assert c2.critique(edited).hash != c.critique(edited).hash
    assert [p.hash for p in c2.critiques if p.id != edited] == [p.hash for p in c.critiques if p.id != edited]

    common = {"prompts": PROMPTS, "limit": n, "constitution": str(yaml_path), "config": cfg(rounds)}
    p = plan(**common, out=tmp_path / "b", engine=cached(vllm_engine, cache_path))
    assert (p["regenerate"], p["requests"], p["cached"]) == (len(touched), expected, n - len(touched))

    eng2 = cached(vllm_engine, cache_path)
    run(eng2, tmp_path / "b", n=n, config=cfg(rounds), constitution=str(yaml_path))
    assert eng2.engine_requests == expected
    assert eng2.cache_hits == n * (1 + 2 * rounds) - expected
    a, b = read_config(tmp_path / "a", "trace"), read_config(tmp_path / "b", "trace")
    for ra, rb in zip(a, b):
        untouched = ra["id"] not in touched or drawn[ra["id"]].index(edited) + 1 > ra["round"]
        assert (ra["revision"] == rb["revision"]) or not untouched
        if untouched:
            assert ra["critique"] == rb["critique"]
    p = plan(**common, out=tmp_path / "b", engine=cached(vllm_engine, cache_path))
    assert (p["finished"], p["regenerate"]) == (n, 0)


class FailingEngine(Engine):
    """Delegates to an engine, except that the listed request ids fail like an HTTP 500 after retries."""

    def __init__(self, inner, fail: set[str]):
        self.inner, self.fail, self._failed = inner, fail, []
        self.name, self.model_id, self.model_hash = inner.name, inner.model_id, inner.model_hash
        self.tokenizer, self.max_model_len = inner.tokenizer, inner.max_model_len

    def submit(self, rid, prompt, params):
        if rid in self.fail:
            self._failed.append((rid, Result(error="HTTPError: 500 Internal Server Error (after 3 retries)")))
        else:
            self.inner.submit(rid, prompt, params)

    def poll(self):
        out, self._failed = self._failed, []
        return out + (self.inner.poll() if self.inner.has_unfinished() else [])

    def has_unfinished(self):
        return bool(self._failed) or self.inner.has_unfinished()


def test_failure_is_recorded_and_exits_3(vllm_engine, tmp_path, cache_path, monkeypatch, capsys):
    from cai import cli, stage
    fail = {"rt-0002#3"}  # rt-0002's round-2 critique
    monkeypatch.setattr(stage, "open_engine",
                        lambda cfg, seed=0, **job: cached(FailingEngine(vllm_engine, fail), cache_path))
    argv = ["critique", "--limit", "3", "--rounds", "2", "--max-tokens", "8", "--filters", "none",
            "--out", str(tmp_path / "out")]
    assert cli.main(argv) == 3
    err = capsys.readouterr().err
    assert "1 of 3 conversations failed (kept 2, filtered 0)" in err
    trace = read_config(tmp_path / "out", "trace")
    bad = [t for t in trace if t["id"] == "rt-0002"]
    assert [t["round"] for t in bad] == [1, 2] and all(t["status"] == "error" for t in bad)
    assert "critique (round 2): HTTPError: 500" in bad[0]["error"]
    assert bad[0]["revision"] and bad[1]["critique"] is None  # round 1 done, round 2 never produced
    assert [r["id"] for r in read_config(tmp_path / "out", "prefs")] == ["rt-0001", "rt-0003"]
    assert read_manifest(tmp_path / "out")["errors"] == 1

    fail.clear()  # the server recovers: the rerun retries only the failed conversation, from the cache
    assert cli.main(argv) == 0
    assert [r["id"] for r in read_config(tmp_path / "out", "prefs")] == ["rt-0001", "rt-0002", "rt-0003"]


def test_filters_drop_rows_count_them_and_keep_them_in_trace(vllm_engine, tmp_path, cache_path):
    run(cached(vllm_engine, cache_path), tmp_path / "a", config=cfg(1))
    eng = cached(vllm_engine, cache_path)
    m = run(eng, tmp_path / "b", config=cfg(1, filters=("empty", "truncated", "scaffold", "unchanged"), retries=0))
    assert eng.engine_requests == 0  # same requests: filtering is applied to finished records (no retries)
    trace = read_config(tmp_path / "b", "trace")
    n_length = sum(t["revision_finish_reason"] == "length" for t in trace)
    assert n_length >= 1  # 8 tokens of a random model: almost always cut at max_tokens
    assert m["filtered"]["truncated"] == n_length and m["kept"] == 3 - sum(m["filtered"].values())
    assert {t["status"] for t in trace if t["revision_finish_reason"] == "length"} == {"filtered"}
    assert len(read_config(tmp_path / "b", "sft")) == m["kept"]


@pytest.mark.parametrize("text,init,reason,expected", [
    ("", "a", "stop", "empty"),
    ("   \n", "a", "length", "empty"),
    ("Sure, here is half of it", "a", "length", "truncated"),
    ("Revision: I can't help with that.", "a", "stop", "scaffold"),
    ("I won't. CritiqueRequest: be nice", "a", "stop", "scaffold"),
    ("Same  answer.", "Same answer.", "stop", "unchanged"),
    ("I can't help with hurting anyone, but here is a safer idea.", "Hit him.", "stop", None),
])
def test_filter_rules(text, init, reason, expected):
    final = {"text": text, "finish_reason": reason}
    assert first_filter(("empty", "truncated", "scaffold", "unchanged"), final, {"text": init}) == expected
    assert first_filter((), final, {"text": init}) is None


def test_config_validation():
    with pytest.raises(InputError, match="rounds"):
        CritiqueConfig(rounds=0)
    with pytest.raises(InputError, match="unknown filter"):
        CritiqueConfig(filters=("empty", "short"))
    with pytest.raises(InputError, match="n=1"):
        CritiqueConfig(critique=SamplingParams(n=2))


def test_cli_dry_run_reports_what_a_rerun_regenerates(vllm_engine, tiny_model, tmp_path, cache_path, capsys):
    from cai import cli
    run(cached(vllm_engine, cache_path), tmp_path / "out", config=cfg(2))
    argv = ["critique", "--dry-run", "--model", str(tiny_model), "--cache", str(cache_path), "--limit", "3",
            "--max-tokens", "8", "--temperature", "0.8", "--filters", "none", "--out", str(tmp_path / "out")]
    assert cli.main(argv + ["--rounds", "2"]) == 0
    assert "0 of 3 conversations would be regenerated (0 requests; 3 already finished" in capsys.readouterr().out
    assert cli.main(argv + ["--rounds", "3"]) == 0  # one more round: rounds 1-2 are cached, round 3 is new
    out = capsys.readouterr()
    assert "3 of 3 conversations would be regenerated (6 requests; 0 already finished" in out.out
    assert "from: round 3 3" in out.out and "needs --overwrite" in out.err
    assert not (tmp_path / "out" / "sft").exists() or read_manifest(tmp_path / "out")["rounds"] == 2
