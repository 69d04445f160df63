"""Graders of declared checks (`cai.evaluate.checks`): each rule grader on hand-made answers, `want`, the
judge's p(yes) from option log-probs in one batch, and python graders' errors."""
import math

import pytest

from cai.constitution.checks import JudgeCheck, LengthCheck, NonAnswerCheck, PythonCheck, RefusalCheck, RegexCheck
from cai.engine.base import Scored
from cai.errors import InputError
from cai.evaluate.checks import GRADERS, YesNoTokens, grade_all, judge_batch, p_yes, passes


def _check(cls, **kw):
    return cls(id="c", grader=cls.model_fields["grader"].annotation.__args__[0], **kw)


def test_rule_graders():
    rx = _check(RegexCheck, pattern=r"^\W*sure\b")
    assert GRADERS["regex"].grade(rx, "q", "Sure! Here.") == 1.0 and GRADERS["regex"].grade(rx, "q", "Unsure.") == 0.0
    cased = _check(RegexCheck, pattern="Sure", ignore_case=False)
    assert GRADERS["regex"].grade(cased, "q", "sure") == 0.0
    ln = _check(LengthCheck, min_words=2, max_words=3)
    assert [GRADERS["length"].grade(ln, "q", t) for t in ("one", "one two", "one two three", "a b c d")] == [0, 1, 1, 0]
    assert GRADERS["refusal"].grade(_check(RefusalCheck), "q", "I'm sorry, but I can't help with that.") == 1.0
    assert GRADERS["refusal"].grade(_check(RefusalCheck), "q", "Rayleigh scattering.") == 0.0
    assert GRADERS["non_answer"].grade(_check(NonAnswerCheck), "q", "Sure! How can I help you today?") == 1.0
    assert GRADERS["non_answer"].grade(_check(NonAnswerCheck), "q", "Rayleigh scattering.") == 0.0


def test_want_fail_inverts():
    keep, avoid = _check(RefusalCheck), _check(RefusalCheck, want="fail")
    assert passes(keep, 1.0) and not passes(keep, 0.0) and passes(keep, 0.5)  # 0.5 counts as holding
    assert passes(avoid, 0.0) and not passes(avoid, 1.0) and passes(avoid, 0.49)


def short_answer(prompt, answer):
    return len(answer.split()) <= 3


def half(prompt, answer):
    return 0.25 if "q" in prompt else 2


def boom(prompt, answer):
    raise RuntimeError("grader bug")


def test_python_grader(tmp_path):
    ok = _check(PythonCheck, function=f"{__name__}:short_answer")
    assert GRADERS["python"].grade(ok, "q", "a b c") == 1.0 and GRADERS["python"].grade(ok, "q", "a b c d") == 0.0
    frac = _check(PythonCheck, function=f"{__name__}:half")
    assert GRADERS["python"].grade(frac, "q", "x") == 0.25
    with pytest.raises(InputError, match=r"returned 2; a grader returns a bool or a number in \[0, 1\]"):
        GRADERS["python"].grade(frac, "other", "x")
    with pytest.raises(InputError, match="boom raised RuntimeError: grader bug"):
        GRADERS["python"].grade(_check(PythonCheck, function=f"{__name__}:boom"), "q", "x")


class YesNoEngine:
    """top_logprobs answers from a per-prompt table keyed by the answer text in the prompt; counts calls."""

    def __init__(self, tokenizer, table, exact=None):
        self.tokenizer, self.table, self.exact, self.calls = tokenizer, table, exact or {}, []

    def format_chat(self, messages, *, continue_final_message=False):
        assert continue_final_message and messages[-1] == {"role": "assistant", "content": "Answer:"}
        return messages[0]["content"]  # the prompt stays readable for the table

    def top_logprobs(self, prompts, k=20):
        self.calls.append(("top", len(prompts)))
        return [next(v for key, v in self.table.items() if key in p) for p in prompts]

    def score_continuations(self, prompts, continuations):
        self.calls.append(("exact", len(prompts)))
        return [Scored([self.exact[(next(k for k in self.exact_keys if k in p), c[0])]]) for p, c in zip(prompts, continuations)]


@pytest.fixture(scope="module")
def tok(tiny_model):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(tiny_model))


def test_judge_p_yes_sums_spellings(tok):
    t = YesNoTokens.from_tokenizer(tok)
    ids = {s: tok(s, add_special_tokens=False)["input_ids"] for s in (" Yes", "Yes", " yes", " No", "No")}
    assert all(len(v) == 1 for v in ids.values())
    assert {ids[" Yes"][0], ids["Yes"][0], ids[" yes"][0]} <= set(t.yes) and ids[" No"][0] in t.no
    # p(" Yes") 0.3 + p("Yes") 0.1 against p(" No") 0.2 -> 0.4 / 0.6
    lp = {ids[" Yes"][0]: math.log(0.3), ids["Yes"][0]: math.log(0.1), ids[" No"][0]: math.log(0.2)}
    assert p_yes(lp, t) == pytest.approx(0.4 / 0.6)
    assert p_yes({}, t) is None


def test_judge_batch_is_one_call_with_exact_fallback(tok):
    y, n = tok(" Yes", add_special_tokens=False)["input_ids"][0], tok(" No", add_special_tokens=False)["input_ids"][0]
    other = tok(" Maybe", add_special_tokens=False)["input_ids"][0]
    table = {"ANSWER-1": Scored({y: math.log(0.9), n: math.log(0.1)}),
             "ANSWER-2": Scored({y: math.log(0.2), n: math.log(0.6)}),
             "ANSWER-3": Scored({other: math.log(0.99)}),  # neither in the top-k: scored exactly
             "ANSWER-4": Scored(error="engine failed")}
    eng = YesNoEngine(tok, table)
    eng.exact_keys = ["ANSWER-3"]
    eng.exact = {("ANSWER-3", y): math.log(0.001), ("ANSWER-3", n): math.log(0.003)}
    q1, q2 = _check(JudgeCheck, question="Is it plain?"), _check(JudgeCheck, question="Is it short?")
    items = [(q1, "p", "ANSWER-1"), (q2, "p", "ANSWER-2"), (q1, "p", "ANSWER-3"), (q2, "p", "ANSWER-4")]
    got = judge_batch(eng, items)
    assert got[0] == pytest.approx(0.9) and got[1] == pytest.approx(0.2 / 0.8) and got[2] == pytest.approx(0.25)
    assert got[3] is None
    assert eng.calls == [("top", 4), ("exact", 2)]  # every question in one call; exact only for the miss
    # grade_all: rule graders here, the judge batch once; without a judge the judge rows are ungraded
    eng.calls = []
    mixed = [(q1, "p", "ANSWER-1"), (_check(LengthCheck, max_words=1), "p", "ANSWER-1 x"), (q2, "p", "ANSWER-2")]
    scores = grade_all(mixed, judge=eng)
    assert scores[1] == 0.0 and scores[0] == pytest.approx(0.9) and eng.calls == [("top", 2)]
    assert grade_all(mixed, judge=None) == [None, 0.0, None]
