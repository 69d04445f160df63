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
                 config=cfg(2, filters=("truncated",), retries=2, send_ahead=False))  # exact request counts
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


class Scripted:
    """An engine without a model, for the send-ahead logic: a revision attempt passes the filters only if
    `passes` lists it for its conversation and step; everything else passes at once. Results come back
    newest first, two per poll, so later attempts often finish before earlier ones."""
    name, reports_stop, dtype = "scripted", True, "float32"

    def __init__(self, tokenizer, passes: dict[tuple[str, int], set[int]]):
        self.model_id = self.model_hash = "scripted"
        self.tokenizer, self.max_model_len, self.passes = tokenizer, 4096, passes
        self.queue, self.sent, self.most_in_flight = [], [], {}

    def format_chat(self, messages, *, continue_final_message=False):
        return [1, len(messages)]

    def encode(self, prompt):
        return list(prompt)

    def submit(self, rid, prompt, params):
        from cai.engine.base import Completion, Result
        conv, _, rest = rid.partition("#")
        k, _, a = rest.partition(".")
        k, a = int(k), int(a or 0)
        ok = k % 2 or k == 0 or a in self.passes.get((conv, k), {0})
        text = f"A careful, kind reply number {a} to you." if ok else "Well, the first thing to"
        res = Result([Completion(text if k % 2 == 0 else "It could be kinder.", [7] * (4 + a), None,
                                 "stop" if ok else "length")], prompt_tokens=2)
        self.queue.append((rid, res))
        self.sent.append((conv, k, a))
        step = sum(1 for c, kk, _ in (self._key(r) for r, _ in self.queue) if (c, kk) == (conv, k))
        self.most_in_flight[(conv, k)] = max(self.most_in_flight.get((conv, k), 0), step)

    @staticmethod
    def _key(rid):
        conv, _, rest = rid.partition("#")
        return conv, int(rest.partition(".")[0]), None

    def poll(self):
        out, self.queue = self.queue[-2:][::-1], self.queue[:-2]
        return out

    def has_unfinished(self):
        return bool(self.queue)


def test_attempts_sent_ahead_change_timing_not_the_dataset(tiny_model, tmp_path):
    """`send_ahead`: near the end of a run, a retried revision's later attempts go to the engine before its
    earlier ones fail. Attempts are taken in order, so the dataset is the one sending them one by one makes;
    the attempts that were not needed are counted as spent and wasted; a rerun is served from the cache."""
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny_model)
    # rt-0001 revises round 1 at its 4th attempt and round 2 at once; rt-0002's round 1 never passes
    passes = {("rt-0001", 2): {3}, ("rt-0002", 2): set()}
    runs = {}
    for ahead in (False, True):
        eng = Scripted(tok, passes)
        cached = CachedEngine(eng, RequestCache(tmp_path / f"c{ahead}.sqlite"))
        m = critique(prompts=PROMPTS, limit=6, out=tmp_path / str(ahead), engine=cached, progress=False,
                     config=cfg(2, retries=4, send_ahead=ahead))
        runs[ahead] = (eng, cached, m)
    (seq, _, m0), (fast, cached, m1) = runs[False], runs[True]
    assert max(seq.most_in_flight.values()) == 1  # one attempt of a step at a time
    assert fast.most_in_flight[("rt-0001", 2)] > 1 and fast.most_in_flight[("rt-0002", 2)] > 1
    t0, t1 = read_config(tmp_path / "False", "trace"), read_config(tmp_path / "True", "trace")
    assert t0 == t1  # the same conversations, attempt for attempt
    row = {(t["id"], t["round"]): t for t in t1}
    assert row[("rt-0001", 1)]["revision_attempts"] == 4 and row[("rt-0002", 1)]["revision_attempts"] == 5
    assert row[("rt-0002", 1)]["status"] == "filtered"
    assert (m0["kept"], m0["filtered"]) == (m1["kept"], m1["filtered"]) and m0["ahead_tokens"] == 0
    # every attempt sent is accounted for: spent = the sequential run's + the attempts not needed
    assert m1["ahead_tokens"] == sum(4 + a for c, k, a in fast.sent) - sum(4 + a for c, k, a in seq.sent) > 0
    assert m1["tokens"] == m0["tokens"] + m1["ahead_tokens"]
    assert m1["wasted_tokens"] == m0["wasted_tokens"] + m1["ahead_tokens"]
    # a rerun from the request cache sends nothing to the engine, ahead or not
    again = Scripted(tok, passes)
    m2 = critique(prompts=PROMPTS, limit=6, out=tmp_path / "again", progress=False, config=cfg(2, retries=4),
                  engine=CachedEngine(again, RequestCache(tmp_path / "cTrue.sqlite")))
    assert again.sent == [] and m2["kept"] == m1["kept"]
