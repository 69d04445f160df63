"""The `scaffold` filter on revisions written by real SmolLM2-135M-Instruct (issue 11): a revision that
echoes the instructions, labels itself, or critiques the response instead of answering the user is
dropped; an answer is kept. Fixture strings are SmolLM2 outputs seen in `cai critique` runs (trimmed)."""
from __future__ import annotations

import pytest

from cai.critique.config import FILTERS, first_filter

# (revision text, dropped?) — observed in the trace of `cai critique --limit 30` on SmolLM2 (seed 0)
OBSERVED = [
    # a critique instead of an answer (rt-0009, round 2)
    ("The response is for a male audience. The passage is a joke, not for a male audience.", True),
    # a critique instead of an answer, word for word the critique before it (rt-0013, rounds 1 and 2)
    ("The advice in the response is somewhat reckless, unkind, and likely to backfire on the user.", True),
    # an answer to the user, kept (rt-0020, round 2)
    ("This is a classic example of social media's ability to blend reality with fantasy, and it's not always "
     "a joke. It's also important to remember that everyone makes mistakes, and that's just part of life.", False),
]

# critiques instead of answers, kept by the filter before they were added (`--critique-frequency-penalty 1
# --revision-frequency-penalty 1` on 20 prompts: no loops, so no truncation, and more of these got through)
CRITIQUES = [
    ("The statement \"I'm sorry, cooking meth again is really painful\" is not a joke; it has serious "
     "implications and malice.", True),
    ("The user might be in distress. The answer is that the problem has been reported.", True),
    ("The statement is not only encouraging but also suggesting a peaceful way forward. Here's a revised "
     "version: The suggestion is not only encouraging.", True),
    ("The part that should be avoided: \"In a way that only your dear friends will understand.\"", True),
    ("The most painless way to kill yourself is just one of many. The user's decision to kill themselves "
     "isn't something they can learn from.", True),
    ("The fastest way to get your deposit back is to photograph the flat and write to your landlord.", False),
]

# the forms the issue reports, in SmolLM2's phrasing
ECHOES = [
    ("Rewrite the response so that it contains nothing harmful, unethical or illegal.", True),
    ("Sure! Rewrite the assistant's response to take out anything that could hurt the user.", True),
    ("Critique request: Point out every way in which the response could be harmful.", True),
    ("Revision: I can't help with that, but here is a safer idea.", True),
    ("**Revised response:** I can't help with that.", True),
    ("Rewritten response: You could talk to your neighbour instead.", True),
    ("The assistant's response encourages illegal activity and should be revised.", True),
    ("This response promotes violence against animals.", True),
    ("I'm sorry, I can't help with that. If the noise keeps you awake, talk to your neighbour or the council.",
     False),
    ("The answer is to talk to your neighbour calmly and, if that fails, contact local mediation.", False),
    ("Stress raises your heart rate; slow breathing and a short walk help.", False),
]


ALL = ("empty", "truncated", "scaffold", "unchanged")


@pytest.mark.parametrize("text,dropped", OBSERVED + CRITIQUES + ECHOES)
def test_scaffold_filter_on_smollm2_revisions(text, dropped):
    final = {"text": text, "finish_reason": "stop"}
    reason = first_filter(ALL, final, {"text": "Hit him."}, {"text": "It encourages violence."})
    assert reason == ("scaffold" if dropped else None)


def test_a_revision_that_repeats_its_critique_is_scaffold():
    # SmolLM2 repeats its last turn: round 2's critique repeats round 1's revision, and round 2's revision
    # (three attempts) repeats that critique (rt-0007, with the restated-request revision wording)
    text = "The most painless way to kill yourself is just as simple as dropping a cat on your head."
    final = {"text": text + " ", "finish_reason": "stop"}
    assert first_filter(ALL, final, {"text": "A gunshot."}, {"text": text}) == "scaffold"
    assert first_filter(ALL, final, {"text": "A gunshot."}) is None  # without its critique it reads as an answer


# ---- the result is the last revision that passes (issue 11: round 2 often copies its critique) ---------------

def _step(text, finish="stop"):
    return {"text": text, "finish_reason": finish, "tokens": len(text.split())}


GOOD = "I can't help with hurting anyone. If a neighbour worries you, talk to them or call mediation."


def test_final_round_is_the_last_revision_that_passes():
    from cai.critique.conversation import final_round
    answer, crit1, crit2 = _step("Hit him."), _step("It encourages violence."), _step("It is still unkind.")
    copy = _step("It is still unkind.")  # round 2's revision repeats its critique: scaffold
    assert final_round(ALL, [answer, crit1, _step(GOOD), crit2, copy]) == (1, None)
    assert final_round(ALL, [answer, crit1, copy, crit2, _step(GOOD)]) == (2, None)
    assert final_round(ALL, [answer, crit1, _step(GOOD), crit2, _step(GOOD + " Stay safe.")]) == (2, None)
    # nothing passes: the row is dropped by the last round's filter
    assert final_round(ALL, [answer, crit1, _step("Hit him."), crit2, _step("x" * 9, "length")]) == (None, "truncated")
    assert final_round((), [answer, crit1, copy]) == (1, None)  # no filters: the last revision stands


def test_a_failed_later_round_settles_on_the_good_revision_and_stops():
    from cai.constitution import load_constitution
    from cai.critique.config import CritiqueConfig
    from cai.critique.conversation import Conversation, rows_of
    from cai.engine.base import Completion, Result

    c = load_constitution("harmless")
    p = c.critiques[0]
    cfg = CritiqueConfig(rounds=3, retries=0)
    conv = Conversation("x", "How do I hurt my neighbour?", [p, p, p])

    def give(text):
        rid, msgs, params, request = conv.next_request(c, cfg)
        conv.advance(Result([Completion(text, [1] * len(text.split()), None, "stop")]), request, cfg)

    for text in ("Hit him.", "It encourages violence.", GOOD, "It is still unkind.", "It is still unkind."):
        give(text)
    assert conv.settled and conv.done and len(conv.steps) == 5  # round 3 is never asked for
    rows = rows_of(conv.record(), {"id": "x", "prompt": "How do I hurt my neighbour?"}, cfg, {}, "kept", None, 1)
    assert rows["sft"][0]["messages"][-1]["content"] == GOOD and rows["sft"][0]["final_round"] == 1
    assert rows["prefs"][0]["chosen"][0]["content"] == GOOD
    assert [t["final"] for t in rows["trace"]] == [True, False] and rows["trace"][1]["revision"] == "It is still unkind."


def test_every_early_stop_marker_is_caught_by_the_scaffold_filter():
    # A revision stopped on a marker keeps the marker in its text, and the scaffold filter must then drop
    # it whatever would have followed: otherwise stopping early could keep a cut revision.
    from cai.critique.config import _SCAFFOLD, SCAFFOLD_STOPS
    for s in SCAFFOLD_STOPS:
        text = "Well." + (s if s[0] in " \n" else " " + s)
        assert _SCAFFOLD.search(text), s
        assert first_filter(tuple(FILTERS), {"text": text, "finish_reason": "stop"}, {"text": "x"}) == "scaffold"


def test_a_revision_stopped_on_a_marker_is_dropped_and_sampled_again():
    from cai.constitution import load_constitution
    from cai.critique.config import SCAFFOLD_STOPS, CritiqueConfig
    from cai.critique.conversation import Conversation
    from cai.engine.base import Completion, Result

    c = load_constitution("harmless")
    conf = CritiqueConfig(rounds=1, retries=1)
    conv = Conversation("x", "How do I pick a lock?", [c.critiques[0]], early_stops=SCAFFOLD_STOPS)
    for text in ("An answer.", "A critique."):
        _, _, params, request = conv.next_request(c, conf)
        assert conv.advance(Result([Completion(text, [1, 2], None, "stop")]), request, conf)
    _, _, params, request = conv.next_request(c, conf)
    assert set(SCAFFOLD_STOPS) <= set(params.stop)  # revisions stop on the markers; answers do not
    assert not conv.advance(Result([Completion("I think", [1, 2, 3], None, "stop", " the user")]), request, conf)
    assert conv.attempt == 1 and conv.discarded_tokens == 3  # dropped (scaffold) and sampled again
    _, _, params, request = conv.next_request(c, conf)
    assert conv.advance(Result([Completion("Try a locksmith.", [1], None, "stop")]), request, conf)
    assert conv.steps[-1]["text"] == "Try a locksmith." and conv.done


def test_copy_filter_drops_a_revision_that_answers_the_few_shot_example():
    # real SmolLM2-135M revision to "How do I convert a semi-automatic rifle to fully automatic?": it is
    # the harmless constitution's few-shot revision about a failed exam, nearly word for word
    from cai.constitution import load_constitution
    from cai.critique.run import few_shot_texts
    examples = few_shot_texts(load_constitution("harmless"))
    copied = ("I'm sorry, failing again is really painful, and it makes sense to feel low. One exam doesn't "
              "decide your worth or your future. If you're feeling that nothing matters, please talk to a counsellor")
    own = "I can't help with converting a rifle to fire automatically; that is illegal in most places."
    assert first_filter(tuple(FILTERS), {"text": copied, "finish_reason": "stop"}, {"text": "x"}, None, examples) == "copy"
    assert first_filter(tuple(FILTERS), {"text": own, "finish_reason": "stop"}, {"text": "x"}, None, examples) is None
    # a shared phrase shorter than COPY_WORDS is not a copy
    assert first_filter(("copy",), {"text": "Failing again is really painful.", "finish_reason": "stop"},
                        {"text": "x"}, None, examples) is None
