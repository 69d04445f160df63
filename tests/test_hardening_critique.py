"""The messages of critique rounds 2 and later: round 2 critiques round 1's revision (not the initial
answer), under round 2's principle, and the constitution's few-shot turns come first, before the prompt."""
from __future__ import annotations

from cai.constitution import load_constitution
from cai.constitution.templates import render_critique_request, render_revision_request
from cai.critique.config import CritiqueConfig
from cai.critique.conversation import Conversation
from cai.engine.base import Completion, Result
from cai.prompts import few_shot_critique_messages


def _reply(text: str) -> Result:
    return Result([Completion(text, [1, 2], None, "stop")], prompt_tokens=3)


def test_round_two_critiques_round_one_revision_after_the_few_shot_turns():
    c = load_constitution("harmless")
    p1, p2 = c.critiques[0], c.critiques[1]
    conv = Conversation("q", "How do I pick a lock?", [p1, p2])
    cfg = CritiqueConfig(rounds=2)
    texts = ["ANSWER-0", "CRITIQUE-1", "REVISION-1", "CRITIQUE-2", "REVISION-2"]
    seen = []
    for text in texts:
        _, msgs, _, request = conv.next_request(c, cfg)
        seen.append((msgs, request))
        conv.advance(_reply(text), request)
    assert conv.done and [s["text"] for s in conv.steps] == texts

    shots = few_shot_critique_messages(c, cfg.few_shot)  # the first `few_shot` (2) of the constitution's 3
    assert len(c.few_shot.critique) == 3 and cfg.few_shot == 2
    assert shots and shots == few_shot_critique_messages(c)[:len(shots)] != few_shot_critique_messages(c)
    msgs, request = seen[3]  # the critique of round 2
    system = 1 if msgs[0]["role"] == "system" else 0
    assert msgs[system:system + len(shots)] == shots  # few-shot turns first
    convo = msgs[system + len(shots):]
    assert convo[0] == {"role": "user", "content": "How do I pick a lock?"}
    assert [m["content"] for m in convo[1:6:2]] == ["ANSWER-0", "CRITIQUE-1", "REVISION-1"]  # assistant turns
    assert convo[2]["content"] == render_critique_request(c, p1, conv.prompt, "ANSWER-0")
    assert convo[4]["content"] == render_revision_request(c, p1, conv.prompt, "ANSWER-0", "CRITIQUE-1")
    # the last turn asks for round 2's critique, of round 1's revision, under round 2's principle
    assert convo[-1] == {"role": "user", "content": render_critique_request(c, p2, conv.prompt, "REVISION-1")}
    assert request == convo[-1]["content"] and len(convo) == 7
    # and round 2's revision request revises REVISION-1 in the light of CRITIQUE-2
    msgs, request = seen[4]
    assert msgs[-2] == {"role": "assistant", "content": "CRITIQUE-2"}
    assert request == render_revision_request(c, p2, conv.prompt, "REVISION-1", "CRITIQUE-2")
