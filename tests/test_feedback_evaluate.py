"""`cai eval judge`: the two content-blind baselines and the Wilson interval by hand, the report of a stub
judge whose every number is known, and the invariants of the shipped labelled comparisons
(data/labels/comparisons.jsonl): size, no prompt shared with data/eval/, length and position balance."""
import json
import math
import re
from pathlib import Path

import pytest

from cai.engine.base import Engine, Scored
from cai.feedback.config import DEFAULT_COMPARISONS, LabelConfig
from cai.feedback.evaluate import _wilson, baselines, eval_judge, prefer_first, prefer_longer, read_labelled

REPO = Path(__file__).resolve().parents[1]

# (response_a words, response_b words, label) -> prefer_longer credit, prefer_first credit
TINY = [
    {"id": "t1", "prompt": "q1", "response_a": "one two three", "response_b": "one", "label": "A"},  # 1, 1
    {"id": "t2", "prompt": "q2", "response_a": "x y", "response_b": "x y z w", "label": "A"},  # 0, 1
    {"id": "t3", "prompt": "q3", "response_a": "p q", "response_b": "r s", "label": "B"},  # tie 0.5, 0
    {"id": "t4", "prompt": "q4", "response_a": "a", "response_b": "b c d", "label": "B"},  # 1, 0
]


def test_baselines_by_hand():
    assert [prefer_longer(r) for r in TINY] == [1.0, 0.0, 0.5, 1.0]
    assert [prefer_first(r) for r in TINY] == [1.0, 1.0, 0.0, 0.0]
    b = baselines(TINY)
    assert b["prefer_longer"]["value"] == 0.625 and b["prefer_longer"]["n"] == 4  # (1 + 0 + 0.5 + 1) / 4
    assert b["prefer_first"]["value"] == 0.5  # 2 of 4 labels are A


def test_wilson_interval_by_hand():
    # 0 of 40: the upper bound is z² / (n + z²) = 3.8415 / 43.8415 = 0.0876, never a zero-width [0, 0]
    assert _wilson(0, 40) == [0.0, 0.0876]
    # 5 of 10: centre 0.5, half-width z / (1 + z²/10) · sqrt(0.025 + z²/400) = 1.41601 · 0.18602 = 0.2634
    assert _wilson(5, 10) == [0.2366, 0.7634]
    lo, hi = _wilson(40, 40)  # symmetric: 40 of 40 mirrors 0 of 40
    assert hi == 1.0 and lo == pytest.approx(1 - 0.0876, abs=1e-4)
    assert _wilson(0, 0) is None


class OptionStub(Engine):
    """A judge with a known rule: `p_first(a_text, b_text)` is p(option A) for the shown options."""

    name = "stub"

    def __init__(self, tokenizer, p_first):
        self.tokenizer, self.p_first = tokenizer, p_first
        self.model_id, self.model_hash, self.max_model_len = "stub", "hash-stub", 2048

    def _tok(self, s):
        return self.tokenizer(s, add_special_tokens=False)["input_ids"][0]

    def top_logprobs(self, prompts, k=20):
        out = []
        for p in prompts:
            opts = self.tokenizer.decode(self.encode(p)).rsplit("Options:", 1)[-1]
            a, b = opts.split("(A) ", 1)[1].split("(B) ", 1)
            b = b.split("Reply with the letter", 1)[0]  # compare.j2's closing line follows option B
            pa = self.p_first(a.strip(), b.strip())
            out.append(Scored({self._tok("A"): math.log(pa), self._tok("B"): math.log(1 - pa)}))
        return out


@pytest.fixture(scope="module")
def tok(tiny_model):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(tiny_model))


def _tiny_file(tmp_path) -> str:
    path = tmp_path / "tiny.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in TINY))
    return str(path)


def test_a_length_judge_scores_what_the_rows_say_and_prints_the_baselines(tmp_path, tok, capsys):
    def longer(a, b):  # prefers the option with more words, 0.5 on a tie
        la, lb = len(a.split()), len(b.split())
        return 0.8 if la > lb else 0.2 if la < lb else 0.5

    rep = eval_judge(data=_tiny_file(tmp_path), constitution="harmless", engine=OptionStub(tok, longer),
                     config=LabelConfig(few_shot=False), out=str(tmp_path / "r.json"))
    # p_a = (p_ab + 1 - p_ba) / 2: t1 (0.8 + 0.8)/2 = 0.8 -> A, right; t2 0.2 -> B, wrong;
    # t3 tie 0.5 -> A (>= 0.5), wrong (label B); t4 0.2 -> B, right. Accuracy 2/4.
    assert [x["p_a"] for x in rep["items"]] == pytest.approx([0.8, 0.2, 0.5, 0.2])
    assert [x["correct"] for x in rep["items"]] == [True, False, False, True]
    r = rep["rates"]
    assert r["accuracy"]["value"] == 0.5 and r["accuracy"]["ci"] == _wilson(2, 4) and r["accuracy"]["n"] == 4
    assert r["prefer_longer"]["value"] == 0.625 and r["prefer_first"]["value"] == 0.5  # as by hand above
    assert r["position_consistency"]["value"] == 1.0  # a length rule ignores the order
    assert r["picks_longer"]["value"] == 0.875  # it picks the longer answer in t1, t2, t4; t3 ties: (3 + 0.5) / 4
    assert json.loads((tmp_path / "r.json").read_text())["rates"] == r
    err = capsys.readouterr().err
    assert re.search(r"accuracy \(95% Wilson interval\)\s+0\.500 \[", err)
    assert re.search(r"prefer the longer\s+0\.625 \[.*\] of 4", err)
    assert re.search(r"prefer the first shown\s+0\.500 \[", err)
    assert re.search(r"judge picks the longer\s+0\.875 \[", err)


def test_a_position_biased_judge_is_at_chance_and_never_consistent(tmp_path, tok):
    rep = eval_judge(data=_tiny_file(tmp_path), constitution="harmless", engine=OptionStub(tok, lambda a, b: 0.9),
                     config=LabelConfig(few_shot=False))
    # p_a = (0.9 + 1 - 0.9) / 2 = 0.5 -> always A: right on the 2 pairs labelled A
    assert rep["rates"]["accuracy"]["value"] == 0.5
    assert rep["rates"]["position_consistency"]["value"] == 0.0  # each order prefers whatever is first
    assert rep["rates"]["picks_longer"]["value"] == 0.375  # A is longer in t1 only; t3 ties: (1 + 0.5) / 4
    # scored in one order only it is exactly the "prefer the first shown" rule
    assert rep["accuracy_first_order_only"] == rep["rates"]["prefer_first"]["value"] == 0.5


# --- the shipped labelled comparisons ----------------------------------------------------------------

STOP = set("a an the i my me you your to of in on for and or is it do how can what whats that this with be so "
           "are at as if from by without".split())


def content_words(text: str) -> set[str]:
    return set(re.sub(r"[^a-z0-9 ]", " ", text.lower()).split()) - STOP


def near_duplicate(p: str, q: str) -> bool:
    """Same request reworded: content-word Jaccard >= 0.5 (a paraphrase such as "Why does my (homemade)
    bread come out dense?" scores 0.86; unrelated prompts that share a frame like "What's the best way to"
    score at most 0.25 against data/eval)."""
    a, b = content_words(p), content_words(q)
    return len(a & b) / max(len(a | b), 1) >= 0.5


@pytest.fixture(scope="module")
def shipped():
    return read_labelled(DEFAULT_COMPARISONS)


def test_near_duplicate_check_can_fail():
    assert near_duplicate("Why does my bread come out dense?", "Why does my homemade bread come out dense?")
    assert not near_duplicate("What's the best way to clean a cast iron pan?",
                              "What's the best way to remove a red wine stain from a carpet?")


def test_shipped_comparisons_share_no_prompt_with_the_held_out_sets(shipped):
    assert Path(DEFAULT_COMPARISONS) == REPO / "data" / "labels" / "comparisons.jsonl"
    held_out = [json.loads(line)["prompt"] for f in sorted((REPO / "data" / "eval").glob("*.jsonl"))
                for line in f.open()]
    assert len(held_out) >= 90
    prompts = [r["prompt"] for r in shipped]
    assert len(set(prompts)) == len(prompts)
    clashes = [(p, q) for p in prompts for q in held_out if near_duplicate(p, q)]
    assert clashes == []


def test_shipped_comparisons_are_length_and_position_balanced(shipped):
    n = len(shipped)
    assert n >= 100
    words = lambda s: len(s.split())  # noqa: E731
    for kind in ("harmful", "benign"):
        assert sum(r["kind"] == kind for r in shipped) >= 40
    assert all(r["reason"].strip() and r["contrast"] and r["category"] for r in shipped)
    assert all(words(r["response_a"]) != words(r["response_b"]) for r in shipped)  # no length ties
    better = lambda r: r["response_a" if r["label"] == "A" else "response_b"]  # noqa: E731
    worse = lambda r: r["response_b" if r["label"] == "A" else "response_a"]  # noqa: E731
    longer_wins = [words(better(r)) > words(worse(r)) for r in shipped]
    assert 0.45 <= sum(longer_wins) / n <= 0.55
    assert 0.45 <= sum(len(better(r)) > len(worse(r)) for r in shipped) / n <= 0.55  # in characters too
    for kind in ("harmful", "benign"):  # and within each kind, so no kind is solved by length
        sub = [w for w, r in zip(longer_wins, shipped) if r["kind"] == kind]
        assert 0.45 <= sum(sub) / len(sub) <= 0.55
    first_wins = [r["label"] == "A" for r in shipped]
    assert 0.45 <= sum(first_wins) / n <= 0.55
    # the two rules are independent: among pairs the longer answer wins, the first shown wins about half
    both = [f for f, w in zip(first_wins, longer_wins) if w]
    assert 0.4 <= sum(both) / len(both) <= 0.6
    b = baselines(shipped)
    assert b["prefer_longer"]["value"] == round(sum(longer_wins) / n, 4)
    assert b["prefer_first"]["value"] == round(sum(first_wins) / n, 4)
