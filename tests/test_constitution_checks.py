"""Checks declared in constitutions (`cai.constitution.checks`): where they may be written, inheritance by
id, `remove`, hashing, python graders next to the constitution, and the shipped constitutions' checks.
Malformed checks (each a FILE:LINE error) are cases in tests/constitutions/malformed/6x_check_*.yaml."""
import textwrap

import pytest

from cai.cli import main
from cai.constitution import load_constitution
from cai.constitution.checks import declared_checks, resolve_function, validate_checks
from cai.constitution.hashing import sha256_json
from cai.errors import InputError


def _write(path, text):
    path.write_text(textwrap.dedent(text))
    return path


BASE = """\
    name: base
    version: "1"
    critiques:
      - id: crit
        critique: Criticise the assistant's response.
        revision: Rewrite the response.
        checks: [{id: crit-short, applies_to: benign, grader: length, max_words: 50}]
    comparisons:
      - {id: cmp, instruction: Which response is better}
    checks:
      - {id: refuses, applies_to: harmful, grader: refusal}
      - {id: answers, applies_to: benign, want: fail, grader: non_answer}
    """


def test_declared_in_file_order_with_origins(tmp_path):
    c = load_constitution(_write(tmp_path / "base.yaml", BASE))
    got = [(o, k.id, k.grader, k.sets) for o, k in declared_checks(c)]
    assert got == [("constitution", "refuses", "refusal", ("harmful",)),
                   ("constitution", "answers", "non_answer", ("benign",)),
                   ("critiques.crit", "crit-short", "length", ("benign",))]
    k = c.checks[0]
    assert (k.want, k.applies_to, k.weight, k._source[1]) == ("pass", "harmful", 1.0, 11)


def test_inherited_by_id_replaced_and_removed(tmp_path):
    _write(tmp_path / "base.yaml", BASE)
    child = _write(tmp_path / "child.yaml", """\
        name: child
        version: "1"
        extends: base.yaml
        remove: [answers]
        checks:
          - {id: refuses, applies_to: all, grader: refusal, description: replaced}
          - {id: short, grader: length, max_words: 20}
        """)
    c = load_constitution(child)
    assert [(k.id, k.applies_to, k.description) for k in c.checks] == [
        ("refuses", "all", "replaced"), ("short", "all", "")]
    assert [k.id for _, k in declared_checks(c)] == ["refuses", "short", "crit-short"]
    assert c.checks[0]._source[0].endswith("child.yaml") and c.critiques[0].checks[0]._source[0].endswith("base.yaml")


def test_hash_covers_checks_but_not_their_absence(tmp_path):
    without = BASE.split("    checks:\n      - {id: refuses")[0].replace(
        "\n        checks: [{id: crit-short, applies_to: benign, grader: length, max_words: 50}]", "")
    plain = load_constitution(_write(tmp_path / "a.yaml", without))
    assert "checks" not in plain.canonical() and "checks" not in plain.canonical()["critiques"][0]
    d = plain.critiques[0].model_dump(mode="json")  # a principle without checks hashes as before they existed
    del d["checks"], d["contrast"]
    assert plain.critiques[0].hash == sha256_json(d)
    with_checks = load_constitution(_write(tmp_path / "b.yaml", BASE))
    assert with_checks.hash != plain.hash  # checks will filter training pairs: they are part of the values
    assert with_checks.critiques[0].hash != plain.critiques[0].hash


def test_python_grader_next_to_the_constitution(tmp_path, capsys):
    (tmp_path / "my_graders_for_test.py").write_text(
        "def answers_first(prompt, answer):\n    return not answer.lower().startswith('sure')\n")
    path = _write(tmp_path / "c.yaml", """\
        name: c
        version: "1"
        comparisons: [{id: cmp, instruction: Which response is better}]
        checks:
          - {id: first, applies_to: benign, grader: python, function: "my_graders_for_test:answers_first"}
        """)
    c = load_constitution(path)
    assert validate_checks(c) == 1
    fn = resolve_function(c.checks[0])
    assert fn("q", "Sure! x") is False and fn("q", "Paris.") is True
    assert main(["constitution", "lint", str(path)]) == 0
    assert "1 checks" in capsys.readouterr().out


def test_python_grader_that_fails_to_import_is_located(tmp_path):
    (tmp_path / "broken_graders_for_test.py").write_text("import no_such_module_anywhere\n")
    path = _write(tmp_path / "c.yaml", """\
        name: c
        version: "1"
        comparisons: [{id: cmp, instruction: Which response is better}]
        checks:
          - id: first
            grader: python
            function: broken_graders_for_test:f
        """)
    with pytest.raises(InputError, match=r"c\.yaml:5:5: checks\[0\]\.function: cannot import 'broken_graders_for_test': "
                                         r"ModuleNotFoundError"):
        validate_checks(load_constitution(path))


def test_shipped_constitutions_declare_their_checks():
    ids = {n: [(k.id, k.grader, k.applies_to, k.want) for _, k in declared_checks(load_constitution(n))]
           for n in ("harmless", "plain_language", "hhh")}
    assert ids["harmless"] == [("refuses-harmful", "refusal", "harmful", "pass"),
                               ("no-over-refusal", "refusal", "benign", "fail"),
                               ("answers-benign", "non_answer", "benign", "fail")]
    assert [i[:2] for i in ids["plain_language"]] == [("short", "length"), ("answer-first", "regex"),
                                                      ("everyday-words", "judge")]
    assert ids["hhh"][:3] == ids["harmless"] and len(ids["hhh"]) == 6  # inherited, plus its own three
