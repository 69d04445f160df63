"""The label math against an engine whose option log-probs are known: a stub returns fixed top log-probs
for the AB and the BA prompt, so p_ab, p_ba and p_chosen can be computed by hand. Also: the BA prompt
really swaps the responses, prefs keep the full responses when the judge read them cut, one-order runs
report no position consistency, CoT seeds name the pair (not its batch position), d-RLAIF errors stay on
their row, and the request cache keeps backends and dtypes apart."""
from __future__ import annotations

import json
import math

import pytest

from cai.constitution import load_constitution
from cai.data.layout import read_config, read_manifest
from cai.engine.base import Completion, Engine, Result, Scored
from cai.feedback.config import LabelConfig
from cai.feedback.judge import Comparison, Judge
from cai.feedback.label import label

# Known next-token probabilities after the answer prefix "(".
#   AB prompt (response 1 shown as (A)):  p("A") = 0.5, p(" A") = 0.1, p("B") = 0.2   -> p_ab = 0.6 / 0.8 = 0.75
#   BA prompt (response 2 shown as (A)):  p("A") = 0.3,                p("B") = 0.5   -> p_ba = 0.3 / 0.8 = 0.375
# p(response 1 better) = (p_ab + 1 - p_ba) / 2 = (0.75 + 0.625) / 2 = 0.6875 -> chosen = response 1, p_chosen = 0.6875
P_AB, P_BA, P1 = 0.75, 0.375, 0.6875


class StubJudge(Engine):
    """An engine with a real tokenizer and chat template whose option log-probs are fixed per order."""

    name, model_id, model_hash = "stub", "stub-judge", "stub-hash"

    def __init__(self, tokenizer, max_model_len: int = 4096, fail=()):
        self.tokenizer, self.max_model_len, self.fail = tokenizer, max_model_len, set(fail)
        self.engine_requests = self.cache_hits = self.generated_tokens = 0
        self.prompts: list[list[int]] = []
        self.seeds: list[int] = []
        ids = {t: tokenizer(t, add_special_tokens=False)["input_ids"] for t in ("A", " A", "B", " the")}
        assert all(len(v) == 1 for v in ids.values())
        self.A, self.sA, self.B, self.other = (ids[t][0] for t in ("A", " A", "B", " the"))

    def order(self, ids) -> str:
        """"ab" when response 1 (which always starts with "First") is shown as option (A)."""
        text = self.tokenizer.decode(ids)
        a = text.rindex("(A)")
        return "ab" if text[a:].lstrip("(A) ").startswith("First") else "ba"

    def top_logprobs(self, prompts, k=20):
        self.engine_requests += len(prompts)
        self.prompts += [list(p) for p in prompts]
        out = []
        for i, p in enumerate(prompts):
            if i in self.fail:
                out.append(Scored(error="RuntimeError: boom"))
                continue
            probs = {self.A: 0.5, self.sA: 0.1, self.B: 0.2, self.other: 0.2} if self.order(p) == "ab" else \
                {self.A: 0.3, self.B: 0.5, self.other: 0.2}
            out.append(Scored({t: math.log(v) for t, v in probs.items()}))
        return out

    def score_continuations(self, prompts, continuations):
        raise AssertionError("every option letter is in the top-k: nothing to score exactly")

    def submit(self, request_id, prompt, params):  # CoT rationales: record the seed, answer a fixed text
        self.seeds.append(params.seed)
        self._done = getattr(self, "_done", []) + [(request_id, Result(
            [Completion(" Both are fine.", self.tokenizer(" Both are fine.", add_special_tokens=False)["input_ids"],
                        None, "stop")], prompt_tokens=len(prompt)))]

    def poll(self):
        out, self._done = getattr(self, "_done", []), []
        return out

    def has_unfinished(self):
        return bool(getattr(self, "_done", []))


@pytest.fixture(scope="module")
def tok(tiny_model):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture(scope="module")
def harmless():
    return load_constitution("harmless")


def test_p_ab_p_ba_p_chosen_from_known_option_logprobs(tok, harmless):
    stub = StubJudge(tok)
    judge = Judge(stub, harmless, LabelConfig(few_shot=False))
    [cmp] = judge.judge([Comparison("x", "Can you help me?", "First: yes, gladly.", "Second: no.")])
    assert cmp.p_ab == pytest.approx(P_AB) and cmp.p_ba == pytest.approx(P_BA)  # " A" and "A" summed
    assert cmp.mass_outside == pytest.approx(0.2) and not cmp.floored
    # the BA prompt shows response 2 as (A) and response 1 as (B); the question is the same in both
    ab, ba = (tok.decode(p) for p in stub.prompts)
    assert ab.index("(A) First: yes") < ab.index("(B) Second: no.")
    assert ba.index("(A) Second: no.") < ba.index("(B) First: yes")
    assert ab[:ab.index("(A)")] == ba[:ba.index("(A)")]


def test_label_writes_hand_computed_soft_labels(tok, harmless, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"id": "x", "prompt": "Can you help me?", "response_a": "First: yes, gladly.",
                                 "response_b": "Second: no."}) + "\n")
    label(data=str(pairs), out=str(tmp_path / "out"), constitution="harmless", engine=StubJudge(tok),
          config=LabelConfig(few_shot=False))
    [row] = read_config(tmp_path / "out", "prefs")
    assert row["p_ab"] == pytest.approx(P_AB) and row["p_ba"] == pytest.approx(P_BA)
    assert row["p_chosen"] == pytest.approx(P1) and row["chosen_is_a"] is True and row["order_consistent"] is True
    assert row["chosen"] == [{"role": "assistant", "content": "First: yes, gladly."}]
    assert read_manifest(tmp_path / "out")["position_consistency"] == 1.0
    # one order only: p_chosen = p_ab, and there is no consistency to report
    label(data=str(pairs), out=str(tmp_path / "one"), constitution="harmless", engine=StubJudge(tok),
          config=LabelConfig(few_shot=False, both_orders=False))
    [one] = read_config(tmp_path / "one", "prefs")
    assert one["p_chosen"] == pytest.approx(P_AB) and one["p_ba"] is None and one["order_consistent"] is None
    assert read_manifest(tmp_path / "one")["position_consistency"] is None


def test_prefs_keep_full_responses_when_the_judge_read_them_cut(tok, harmless, tmp_path):
    long = "First: " + "a very long and careful answer " * 200
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"id": "x", "prompt": "Tell me a story.", "response_a": long,
                                 "response_b": "Second: short."}) + "\n")
    label(data=str(pairs), out=str(tmp_path / "out"), constitution="harmless", engine=StubJudge(tok, 600),
          config=LabelConfig(few_shot=False))
    [row] = read_config(tmp_path / "out", "prefs")
    assert row["truncated"] and row["chosen"][0]["content"] == long  # trained on: the full response
    assert row["judged_chosen"].endswith(" [...]") and long.startswith(row["judged_chosen"][:-6].rstrip()[:200])
    assert row["judged_rejected"] == "Second: short." and "[...]" not in row["rejected"][0]["content"]


def test_cot_seed_names_the_pair_not_its_batch_position(tok, harmless):
    cfg = LabelConfig(mode="cot", few_shot=False, cot_max_tokens=4)
    x = Comparison("x", "Q?", "First: a.", "Second: b.")
    y = Comparison("y", "Q?", "First: c.", "Second: d.")
    alone, batched = StubJudge(tok), StubJudge(tok)
    Judge(alone, harmless, cfg).judge([Comparison("x", "Q?", "First: a.", "Second: b.")])
    Judge(batched, harmless, cfg).judge([y, x])  # x is now second in the batch (a resume reorders work)
    assert batched.seeds[2:] == alone.seeds and len(set(batched.seeds)) == 4


def test_d_rlaif_error_stays_on_its_row(tok, harmless):
    from cai.feedback.score import score_responses

    class Scores(StubJudge):
        def top_logprobs(self, prompts, k=20):
            seven = self.tokenizer("7", add_special_tokens=False)["input_ids"][0]
            return [Scored({seven: 0.0}) if i == 0 else Scored(error="too_long: prompt exceeds the context")
                    for i in range(len(prompts))]

        def score_continuations(self, prompts, continuations):
            return [Scored([-50.0] * len(c)) for c in continuations]  # every other score is (almost) impossible

    r = score_responses(Scores(tok), harmless, ["Say hi.", "Say hi."], ["Hello!", "Go away."])
    assert r[0].ok and r[0].value == pytest.approx(2 * (7 - 1) / 9 - 1, abs=1e-6)  # E[score] = 7 on 1..10 -> 1/3
    assert r[1] == Scored(error="too_long: prompt exceeds the context")


def test_request_cache_keeps_backends_and_dtypes_apart(tmp_path):
    from cai.data.store import RequestCache
    from cai.engine.base import SamplingParams
    from cai.engine.cached import CachedEngine

    class Fake(Engine):
        model_id, model_hash, tokenizer, max_model_len = "m", "same-weights", None, 64

        def __init__(self, name, dtype):
            self.name, self.dtype, self.q = name, dtype, []

        def submit(self, rid, prompt, params):
            self.q.append((rid, Result([Completion(f"{self.name}/{self.dtype}", [1], None, "stop")])))

        def poll(self):
            out, self.q = self.q, []
            return out

        def has_unfinished(self):
            return bool(self.q)

    cache = RequestCache(tmp_path / "c.sqlite")
    sp = SamplingParams(temperature=0, max_tokens=1)
    texts = []
    for name, dtype in [("vllm", "bfloat16"), ("hf", "float32"), ("hf", "float32")]:
        eng = CachedEngine(Fake(name, dtype), cache)
        texts.append(eng.generate([[1, 2, 3]], sp)[0].text)
        assert eng.cache_hits == (1 if len(texts) == 3 else 0)
    assert texts == ["vllm/bfloat16", "hf/float32", "hf/float32"]  # the fp32 run never got the bf16 answer
