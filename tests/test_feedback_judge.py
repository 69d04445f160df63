"""The judge against a real engine (the session's tiny vLLM model): batched option log-probs, both
orders, context fitting, per-row engine errors, CoT clamp and d-RLAIF scores."""
import pytest

from cai.constitution import load_constitution
from cai.engine.base import Scored
from cai.engine.cached import CachedEngine
from cai.feedback.config import LabelConfig
from cai.feedback.judge import Comparison, Judge


@pytest.fixture(scope="module")
def engine(vllm_engine):
    return CachedEngine(vllm_engine, None)


@pytest.fixture(scope="module")
def harmless():
    return load_constitution("harmless")


class Shim:
    """The engine with a smaller context, or failing on chosen prompts."""

    def __init__(self, inner, max_model_len=None, fail_on=()):
        self.inner, self.fail_on = inner, set(fail_on)
        self.max_model_len = max_model_len or inner.max_model_len

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def top_logprobs(self, prompts, k=20):
        out = self.inner.top_logprobs(prompts, k)
        return [Scored(error="RuntimeError: boom") if i in self.fail_on else o for i, o in enumerate(out)]


def _cmps():
    return [Comparison("p1", "How do I pick my neighbour's lock?", "I can't help with that.", "Use a rake pick."),
            Comparison("p2", [{"role": "user", "content": "Say hi."}], "Hello!", "Go away."),
            Comparison("p3", "What is 2+2?", "4", "5")]


class Recorder(Shim):
    """The engine, keeping every prompt the judge sends for option log-probs."""

    def __init__(self, inner):
        super().__init__(inner)
        self.sent: list[list[int]] = []

    def top_logprobs(self, prompts, k=20):
        self.sent += [list(p) for p in prompts]
        return self.inner.top_logprobs(prompts, k)


def _expected_p_first(model, tok, ids: list[int], a_ids: list[int], b_ids: list[int], k: int = 20):
    """p(A) / (p(A) + p(B)) from a plain transformers forward over the whole vocabulary (not the engine, not
    cai's option code), read as the judge defines it: a letter sums its spellings that are among the k most
    likely next tokens; a letter with none there counts its canonical token, scored exactly."""
    import torch
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].double(), -1)  # (V,)
    top = set(logp.topk(k).indices.tolist())
    masses = []
    for variants, letter in ((a_ids, "A"), (b_ids, "B")):
        seen = [t for t in variants if t in top]
        canon = tok(letter, add_special_tokens=False)["input_ids"]
        masses.append(float(logp[seen].exp().sum()) if seen else float(logp[canon[0]].exp()))
    return masses[0] / (masses[0] + masses[1]), 1 - masses[0] - masses[1]


def test_judge_reads_option_logprobs_in_both_orders(engine, harmless, tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    rec = Recorder(engine)
    judge = Judge(rec, harmless, LabelConfig(few_shot=False, principles=2))
    cmps = judge.judge(_cmps())
    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype="float32").eval()
    # the option letters' spellings, from the vocabulary by hand: "A", " A", "(A", " (A" (and B)
    decoded = [tok.decode([i]) for i in range(len(tok))]
    spell = {x: [i for i, d in enumerate(decoded) if d.strip().removeprefix("(").strip() == x] for x in "AB"}
    assert tok("A", add_special_tokens=False)["input_ids"][0] in spell["A"] and len(spell["A"]) >= 2
    assert len(rec.sent) == 4 * len(cmps)  # 2 principles × 2 orders per pair, in one batch
    for n, cmp in enumerate(cmps):
        assert cmp.error is None and len(cmp.principles) == 2
        sent = rec.sent[4 * n:4 * n + 4]  # [principle 0 ab, principle 0 ba, principle 1 ab, principle 1 ba]
        for j, ids in enumerate(sent):
            text = tok.decode(ids)
            first, second = (cmp.r1, cmp.r2) if j % 2 == 0 else (cmp.r2, cmp.r1)
            assert text.index(f"(A) {first}") < text.index(f"(B) {second}"), text
        expected = [_expected_p_first(model, tok, ids, spell["A"], spell["B"]) for ids in sent]
        assert cmp.p_ab == pytest.approx((expected[0][0] + expected[2][0]) / 2, abs=2e-3)
        assert cmp.p_ba == pytest.approx((expected[1][0] + expected[3][0]) / 2, abs=2e-3)
        assert cmp.mass_outside == pytest.approx(sum(e[1] for e in expected) / 4, abs=2e-3)
        assert abs(cmp.p_ab - 0.5) > 1e-4 or abs(cmp.p_ba - 0.5) > 1e-4  # not the "no letter seen" fallback
    # same key -> same principles (seeded), independent of batch
    assert [p.id for p in judge.principles_for("p1")] == [p.id for p in cmps[0].principles]


def test_over_long_pair_is_truncated_not_the_question(engine, harmless):
    small = Shim(engine, max_model_len=400)
    judge = Judge(small, harmless, LabelConfig(few_shot=False))
    long = " ".join(["word"] * 2000)
    cmp = Comparison("long", "Tell me a story.", long, "Short answer.")
    ids = judge.fit(cmp)
    assert cmp.truncated and cmp.r1.endswith("[...]") and cmp.r2 == "Short answer."
    assert max(map(len, ids)) <= 400 - judge.reserve
    assert "Tell me a story." in engine.tokenizer.decode(ids[0])
    [done] = judge.judge([Comparison("long", "Tell me a story.", long, "Short answer.")])
    assert done.error is None and done.truncated
    [q] = judge.judge([Comparison("q", " ".join(["why"] * 2000), "a", "b")])
    assert q.error.startswith("too_long")


def test_engine_error_on_one_row_is_recorded(engine, harmless):
    judge = Judge(Shim(engine, fail_on={2}), harmless, LabelConfig(few_shot=False))  # prompt 2 = pair 2, order ab
    cmps = judge.judge(_cmps())
    assert cmps[0].error is None and cmps[2].error is None
    assert cmps[1].error == "RuntimeError: boom" and cmps[1].p_ab is None


def test_cot_rationale_then_clamped_probabilities(engine, harmless):
    judge = Judge(engine, harmless, LabelConfig(mode="cot", few_shot=False, cot_max_tokens=6))
    cmps = judge.judge(_cmps()[:2])
    for cmp in cmps:
        assert cmp.error is None and cmp.rationale and cmp.rationale_ba
        assert 0.4 <= cmp.p_ab <= 0.6 and 0.4 <= cmp.p_ba <= 0.6
    # with a tight clamp every p sits on a bound or between
    tight = Judge(engine, harmless, LabelConfig(mode="cot", few_shot=False, cot_max_tokens=6, clamp=(0.5, 0.5)))
    assert all(c.p_ab == 0.5 for c in tight.judge(_cmps()[:1]))


def test_d_rlaif_scores_in_range(engine, harmless):
    from cai.feedback.score import ScoreTokens, score_responses
    scored = score_responses(engine, harmless, ["Say hi.", "Say hi."], ["Hello!", "Go away."])
    again = score_responses(engine, harmless, ["Say hi."], ["Go away."])
    assert all(x.ok for x in scored + again)
    rewards = [x.value for x in scored]
    assert len(rewards) == 2 and rewards[0] != rewards[1] and again[0].value == pytest.approx(rewards[1], abs=1e-4)
    # the reward is the expected score of the judge's distribution, rescaled: by hand in test_hardening_feedback
    tokens = ScoreTokens.from_tokenizer(engine.tokenizer, 1, 10)
    assert len(tokens.seqs[10]) == 2 and tokens.seqs[10][0] == tokens.seqs[1][0]  # "10" = "1" "0" in SmolLM2
