"""Prompt rendering: message lists for critique, revision, comparison and scoring, in a sandbox."""

import pytest

import cai.constitution.templates as T
import cai.prompts as P
from cai.constitution import load_constitution
from cai.errors import InputError

BASE = """\
name: t
version: "1"
system_prompt: Be kind.
critiques:
  - id: rude
    critique: Is the assistant's response rude?
    revision: Rewrite the response politely.
comparisons:
  - id: kind
    instruction: Choose the kinder response.
  - id: safe
    instruction: Choose the safer response.
few_shot:
  critique:
    - - {role: user, content: Hi}
      - {role: assistant, content: Go away.}
      - {role: user, content: "Rude?"}
      - {role: assistant, content: Yes.}
      - {role: user, content: Rewrite.}
      - {role: assistant, content: Hello!}
  comparison:
    - prompt: Hi
      response_a: Hello!
      response_b: What.
      answer: A
      principle: safe
      rationale: (A) greets the user.
    - prompt:
        - {role: user, content: Hi}
        - {role: assistant, content: Hello.}
        - {role: user, content: Bye}
      response_a: Whatever.
      response_b: Goodbye, take care!
      answer: B
"""


@pytest.fixture
def c(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text(BASE)
    return load_constitution(p)


def test_critique_and_revision_messages(c):
    p = c.critiques[0]
    assert T.render_critique_request(c, p, "Q?", "A.") == ("Is the assistant's response rude? Answer in two or "
                                                           "three sentences.")
    msgs = P.revision_messages(c, p, "Where is Paris?", "In France.", "It is fine.")
    assert [m["role"] for m in msgs] == ["system"] + ["user", "assistant"] * 5 + ["user"]
    assert msgs[0]["content"] == "Be kind."
    assert msgs[7:] == [{"role": "user", "content": "Where is Paris?"},
                        {"role": "assistant", "content": "In France."},
                        {"role": "user", "content": "Is the assistant's response rude? Answer in two or three "
                                                    "sentences."},
                        {"role": "assistant", "content": "It is fine."},
                        {"role": "user", "content": 'Rewrite the response politely. Write only the new response '
                                                    'to "Where is Paris?", in a few sentences addressed to the user.'}]
    assert P.critique_messages(c, p, "Q", "A", few_shot=False)[1:] == [
        {"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"},
        {"role": "user", "content": "Is the assistant's response rude? Answer in two or three sentences."}]


def test_render_compare_ends_in_answer_prefix(c):
    msgs = P.render_compare(c, [c.comparisons[0]], "Is tea good?", "Yes, many enjoy it.", "No.")
    assert msgs[-1] == {"role": "assistant", "content": "The answer is: ("}
    user = msgs[-2]["content"]
    assert "User: Is tea good?" in user and "Choose the kinder response." in user
    assert "(A) Yes, many enjoy it.\n(B) No." in user
    # few-shot: each example is a user turn and an answer; example 0 shows its own principle
    assert msgs[0]["role"] == "system"
    assert [m["role"] for m in msgs[1:5]] == ["user", "assistant"] * 2
    assert "Choose the safer response." in msgs[1]["content"]
    assert [msgs[2]["content"], msgs[4]["content"]] == ["The answer is: (A)", "The answer is: (B)"]
    assert "User: Hi\n\nAssistant: Hello.\n\nUser: Bye" in msgs[3]["content"]
    assert T.option_letters(c) == ("A", "B") and P.answer_prefix(c) == "The answer is: ("


def test_render_compare_several_principles(c):
    user = P.render_compare(c, c.comparisons, "Q", "a", "b", few_shot=False)[-2]["content"]
    assert "- Choose the kinder response.\n- Choose the safer response." in user


def test_render_compare_cot(c):
    msgs = P.render_compare_cot(c, [c.comparisons[0]], "Q", "a", "b")
    assert msgs[-1] == {"role": "assistant", "content": "Let's think step by step:"}
    # only the example with a rationale is used
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant"]
    assert msgs[2]["content"] == "Let's think step by step: (A) greets the user.\nSo the answer is: (A)"
    assert P.cot_answer_suffix(c) == "\nSo the answer is: ("


def test_render_score(c):
    msgs = P.render_score(c, "Q", "R")
    assert msgs[-1] == {"role": "assistant", "content": "Rating: "}
    assert "Assistant: R" in msgs[-2]["content"] and "from 1 to 10" in msgs[-2]["content"]
    assert T.score_range(c) == (1, 10)


def test_custom_letters_and_prefixes(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text(BASE.replace("few_shot:", 'templates:\n  options: [X, Y]\n  answer_prefix: "Better: ["\n'
                              "few_shot:"))
    c = load_constitution(p)
    msgs = P.render_compare(c, [c.comparisons[0]], "Q", "a", "b")
    assert msgs[-1]["content"] == "Better: [" and "(X) a\n(Y) b" in msgs[-2]["content"]
    assert msgs[4]["content"] == "Better: [Y)"


def test_template_override_with_include(tmp_path):
    (tmp_path / "part.j2").write_text("Principle: {{ principle.critique }}")
    (tmp_path / "crit.j2").write_text('{% include "part.j2" %} Response: {{ response }}')
    p = tmp_path / "t.yaml"
    p.write_text(BASE + "templates:\n  critique: crit.j2\n")
    c = load_constitution(p)
    assert T.render_critique_request(c, c.critiques[0], "Q", "R") == \
        "Principle: Is the assistant's response rude? Response: R"


@pytest.mark.parametrize("body, message", [
    ("{{ ''.__class__.__mro__ }}", "unsafe template refused by the sandbox"),
    ("{{ principle.__init__.__globals__ }}", "unsafe template refused by the sandbox"),
    ("{{ cycler.__init__.__globals__.os }}", "unsafe template refused by the sandbox"),
    ("line one\n{{ nope }}", "undefined variable: 'nope' is undefined"),
    ('{% include "../../etc/passwd" %}', "template not found"),
])
def test_unsafe_or_undefined_templates_are_refused(tmp_path, body, message):
    (tmp_path / "crit.j2").write_text(body)
    p = tmp_path / "t.yaml"
    p.write_text(BASE + "templates:\n  critique: crit.j2\n")
    with pytest.raises(InputError) as e:
        load_constitution(p)
    err = str(e.value)
    assert message in err and "crit.j2" in err and "templates.critique" in err and e.value.exit_code == 2


def test_messages_work_with_a_real_chat_template(c):
    """The engine formats our message lists with the model's chat template; continuing the final
    assistant message leaves the answer prefix as the last text, so the next token is the letter."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]")))
    tok.chat_template = ("{% for m in messages %}<{{ m.role }}>{{ m.content }}"
                         "{% if not (loop.last and m.role == 'assistant') %}</{{ m.role }}>{% endif %}{% endfor %}")
    msgs = P.render_compare(c, [c.comparisons[0]], "Q", "a", "b")
    text = tok.apply_chat_template(msgs, tokenize=False, continue_final_message=True)
    assert text.endswith("<assistant>The answer is: (") and text.startswith("<system>Be kind.</system>")
