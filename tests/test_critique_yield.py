"""What keeps SL-CAI yield high and honest (issue 11; issue 9 items 3 and 8): revisions the filters would
drop are sampled again with another seed, tokens spent on dropped rows are reported, a conversation that
overflows the context is recorded as `too_long` and not retried, the progress bar counts engine steps,
and the dtype is in the manifest. The tiny random model writes 8-token steps, so its revisions are cut."""
from __future__ import annotations

from pathlib import Path

from cai.critique import CritiqueConfig, critique
from cai.critique import run as critique_run
from cai.data.layout import read_config, read_manifest
from cai.data.store import RecordLog, RequestCache
from cai.engine.base import SamplingParams
from cai.engine.cached import CachedEngine

REPO = Path(__file__).resolve().parents[1]
PROMPTS = str(REPO / "data" / "red_team.jsonl")
SP = SamplingParams(temperature=0.8, max_tokens=8)


def cfg(rounds: int = 1, **kw) -> CritiqueConfig:
    return CritiqueConfig(rounds=rounds, answer=SP, critique=SP, revision=SP, **kw)


def test_dropped_revision_is_sampled_again_and_wasted_tokens_are_counted(vllm_engine, tmp_path, cache_path):
    eng = CachedEngine(vllm_engine, RequestCache(cache_path))
    m = critique(prompts=PROMPTS, limit=4, out=tmp_path / "out", engine=eng, progress=False,
                 config=cfg(2, filters=("truncated",), retries=2))
    trace = read_config(tmp_path / "out", "trace")
    attempts = [t["revision_attempts"] for t in trace]
    assert set(attempts) <= {1, 2, 3} and max(attempts) == 3  # 8 tokens: most revisions are cut, 3 tries each
    retried = sum(a - 1 for a in attempts)
    assert m["retried_revisions"] == retried
    assert eng.engine_requests == 4 * 5 + retried  # answer + 2 x (critique, revision), plus the retries
    # a retried revision was cut every time, or its last attempt ended on its own
    for t in trace:
        assert t["revision_attempts"] == 3 or t["revision_finish_reason"] == "stop"
    # wasted = discarded attempts of every row + everything a dropped row generated
    recs = RecordLog(tmp_path / "out" / ".cai" / "records" / "conversations").load()
    discarded = sum(s.get("discarded_tokens", 0) for r in recs.values() for s in r["steps"])
    dropped = sum(s["tokens"] for r in recs.values() if r["id"] in {t["id"] for t in trace if t["status"] != "kept"}
                  for s in r["steps"])
    assert discarded > 0 and m["wasted_tokens"] == discarded + dropped
    assert m["tokens"] == sum(s["tokens"] + s.get("discarded_tokens", 0) for r in recs.values() for s in r["steps"])
    assert m["kept"] == sum(t["status"] == "kept" for t in trace if t["round"] == 2)
    # the same run again: every attempt, retries included, comes from the request cache
    eng2 = CachedEngine(vllm_engine, RequestCache(cache_path))
    critique(prompts=PROMPTS, limit=4, out=tmp_path / "again", engine=eng2, progress=False,
             config=cfg(2, filters=("truncated",), retries=2))
    assert (eng2.engine_requests, eng2.cache_hits) == (0, 4 * 5 + retried)
    assert read_config(tmp_path / "again", "trace") == trace


def test_too_long_is_recorded_once_and_not_retried_on_rerun(vllm_engine, tmp_path, cache_path):
    # the answer fits the 2,048-token context; the critique request (few-shot turns + answer) does not
    long = "Tell me everything about locks. " + "Please explain in great detail. " * 260
    prompts = [{"id": "ok", "prompt": "How do I pick a lock?"}, {"id": "long", "prompt": long}]
    eng = CachedEngine(vllm_engine, RequestCache(cache_path))
    m = critique(prompts=prompts, out=tmp_path / "out", engine=eng, progress=False, config=cfg(1, filters=()))
    assert (m["kept"], m["too_long"], m["errors"]) == (1, 1, 0)  # exit 0: nothing failed
    assert eng.engine_requests == 3 + 2  # ok: 3 steps; long: its answer, then the critique that overflowed
    trace = {t["id"]: t for t in read_config(tmp_path / "out", "trace")}
    assert trace["long"]["status"] == "too_long" and "critique (round 1)" in trace["long"]["error"]
    assert "model's context is 2048" in trace["long"]["error"] and trace["long"]["critique"] is None
    assert [r["id"] for r in read_config(tmp_path / "out", "sft")] == ["ok"]
    # rerun: the overflow is recorded, nothing reaches the engine (a failure would be retried)
    eng2 = CachedEngine(vllm_engine, RequestCache(cache_path))
    m2 = critique(prompts=prompts, out=tmp_path / "out", engine=eng2, progress=False, config=cfg(1, filters=()))
    assert (eng2.engine_requests, eng2.cache_hits, m2["too_long"]) == (0, 0, 1)


def test_progress_counts_engine_steps_and_manifest_has_dtype(vllm_engine, tmp_path, cache_path, monkeypatch,
                                                             capsys):
    bars = []
    make = critique_run._steps_bar
    monkeypatch.setattr(critique_run, "_steps_bar", lambda *a: bars.append(make(*a)) or bars[-1])
    eng = CachedEngine(vllm_engine, RequestCache(cache_path))
    m = critique(prompts=PROMPTS, limit=3, out=tmp_path / "out", engine=eng, progress=True,
                 config=cfg(2, filters=("truncated",), retries=1))
    bar = bars[0].bar
    assert bar.unit == "step" and bar.n == bar.total == eng.engine_requests == 3 * 5 + m["retried_revisions"]
    assert m["provenance"]["dtype"] == "float32" == read_manifest(tmp_path / "out")["provenance"]["dtype"]
    err = capsys.readouterr().err
    assert f"kept {m['kept']} of 3 conversations in {tmp_path / 'out'}" in err
    assert f"next: cai train sft --config configs/sft.yaml data.path={tmp_path / 'out'}" in err
    assert "float32" in err


def test_a_dropped_round_is_not_built_upon():
    # Round 1's revision is dropped (cut at its budget): round 2 critiques the initial answer, and neither
    # round 1's critique nor its ramble is in round 2's context. A round that stands is built upon.
    from cai.constitution import load_constitution
    from cai.critique.conversation import Conversation, final_round
    from cai.engine.base import Completion, Result

    c = load_constitution("harmless")
    conf = CritiqueConfig(rounds=2, retries=0)

    def res(text, reason="stop"):
        return Result([Completion(text, [1] * 5, None, reason)], prompt_tokens=9)

    def run(rev1):
        conv = Conversation("x", "How do I pick a lock?", [c.critiques[0], c.critiques[1]])
        script = [res("ANSWER0"), res("CRIT1"), rev1, res("CRIT2"), res("REV2")]
        contexts = []
        for r in script:
            _, msgs, _, request = conv.next_request(c, conf)
            contexts.append(" ".join(m["content"] for m in msgs))
            assert conv.advance(r, request, conf)
        return conv, contexts

    conv, ctx = run(res("REV1 rambles on " * 5, "length"))
    assert "CRIT1" not in ctx[3] and "REV1" not in ctx[3] and "ANSWER0" in ctx[3]  # round 2's critique
    assert "CRIT2" in ctx[4] and "REV1" not in ctx[4]  # round 2's revision
    assert final_round(conf.filters, conv.steps) == (2, None)
    conv, ctx = run(res("REV1 is a fine answer to you."))
    assert "CRIT1" in ctx[3] and "REV1 is a fine answer" in ctx[3]
