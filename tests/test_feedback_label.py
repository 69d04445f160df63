"""`cai label`'s prefs table orients each pair by its soft label: when response B wins, `chosen` is response B
and `p_chosen` is p(B better), computed by hand from known option log-probs (the stub judge of
tests/test_hardening_feedback.py prefers whichever response starts with "First", in either position)."""
from __future__ import annotations

import json

import pytest
from test_hardening_feedback import StubJudge

from cai.data.layout import read_config
from cai.feedback.config import LabelConfig
from cai.feedback.label import label


@pytest.fixture(scope="module")
def tok(tiny_model):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(tiny_model)


def test_response_b_wins_and_is_chosen(tok, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    rows = [{"id": "a-wins", "prompt": "Can you help me?", "response_a": "First: yes, gladly.", "response_b": "Second: no."},
            {"id": "b-wins", "prompt": "Can you help me?", "response_a": "Second: no.", "response_b": "First: yes, gladly."}]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    label(data=str(pairs), out=str(tmp_path / "out"), constitution="harmless", engine=StubJudge(tok),
          config=LabelConfig(few_shot=False))
    got = {r["id"]: r for r in read_config(tmp_path / "out", "prefs")}
    # The stub: a prompt showing the "First" response as (A) gets p(A) = 0.6 (A + " A"), p(B) = 0.2; one showing
    # it as (B) gets p(A) = 0.3, p(B) = 0.5. For "b-wins", response_a ("Second") is (A) in the AB prompt:
    #   p_ab = 0.3 / 0.8 = 0.375;  in the BA prompt response_b ("First") is (A): p_ba = 0.6 / 0.8 = 0.75
    #   p(response_a better) = (p_ab + 1 − p_ba) / 2 = (0.375 + 0.25) / 2 = 0.3125 -> response_b wins, 0.6875
    b = got["b-wins"]
    assert b["p_ab"] == pytest.approx(0.375) and b["p_ba"] == pytest.approx(0.75)
    assert b["chosen_is_a"] is False and b["p_chosen"] == pytest.approx(0.6875)
    assert b["chosen"] == [{"role": "assistant", "content": "First: yes, gladly."}]
    assert b["rejected"] == [{"role": "assistant", "content": "Second: no."}]
    # the mirror image: response_a wins with the same p_chosen, and the two rows train the same preference
    a = got["a-wins"]
    assert a["p_ab"] == pytest.approx(0.75) and a["p_ba"] == pytest.approx(0.375)
    assert a["chosen_is_a"] is True and a["p_chosen"] == pytest.approx(0.6875)
    assert (a["chosen"], a["rejected"]) == (b["chosen"], b["rejected"])
    assert a["prompt"] == b["prompt"] == [{"role": "user", "content": "Can you help me?"}]
