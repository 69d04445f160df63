"""`cai constitution lint|show|diff|import`, and the importers on project-written examples."""
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from cai.cli import main
from cai.constitution import load_constitution
from cai.constitution.importers import transcript_to_messages

HERE = Path(__file__).parent
FORMATS = HERE / "fixtures_formats"
REAL = HERE.parents[1] / "shared" / "fixtures"  # real files, present only in the team's workspace


def test_lint_shipped_strict(capsys):
    assert main(["constitution", "lint", "--strict", "harmless", "hhh", "plain_language"]) == 0
    out = capsys.readouterr()
    assert out.err == "" and out.out.count(": ok (") == 3


def test_lint_warnings(tmp_path, capsys):
    p = tmp_path / "w.yaml"
    p.write_text("""\
name: w
version: "1"
critiques:
  - id: vague
    critique: Think about ethics.
    revision: Do better.
few_shot:
  critique:
    - - {role: user, content: "Human: hi"}
      - {role: assistant, content: hello}
""")
    assert main(["constitution", "lint", str(p)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert any("w.yaml:4:5: warning: critiques[0].critique: principle 'vague' never refers to the response" in e
               for e in err), err
    assert any(": warning: critiques[0].revision: " in e for e in err)
    assert any("w.yaml:9:7: warning: few_shot.critique[0]: has 2 turns" in e for e in err)
    assert any("few_shot.critique[0]: contains raw transcript markup" in e for e in err)
    assert main(["constitution", "lint", "--strict", str(p)]) == 2


def test_show_json_and_text(capsys):
    assert main(["constitution", "show", "hhh", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    c = load_constitution("hhh")
    assert d["hash"] == c.hash and d["parents"] == ["harmless"]
    assert [p["id"] for p in d["critiques"]] == [p.id for p in c.critiques]
    assert d["critiques"][0]["hash"] == c.critiques[0].hash
    assert d["templates"]["answer_prefix"] == "The answer is: ("
    assert main(["constitution", "show", "plain_language"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["name"] == "plain_language" and shown["comparisons"][1]["weight"] == 0.5


def test_diff(capsys):
    assert main(["constitution", "diff", "harmless", "hhh", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["critiques"]["removed"] == ["children"] and d["critiques"]["changed"] == ["tone"]
    assert set(d["critiques"]["added"]) == {"evasive", "honesty", "helpfulness"}
    assert d["comparisons"]["removed"] == ["calm"] and "system_prompt" in d["other_changes"]
    # hhh inherits harmless's three checks unchanged and adds three of its own
    assert d["checks"] == {"added": ["no-lecture", "direct-answer", "brief-refusal"], "removed": [], "changed": []}
    assert main(["constitution", "diff", "harmless", "hhh"]) == 0
    text = capsys.readouterr().out
    assert "- critiques.children" in text and "~ critiques.tone" in text and "+ critiques.evasive" in text
    assert "+ checks.no-lecture" in text
    assert main(["constitution", "diff", "--exit-code", "harmless", "harmless"]) == 0
    assert "no differences" in capsys.readouterr().out
    assert main(["constitution", "diff", "--exit-code", "harmless", "hhh"]) == 1


def test_transcript_to_messages():
    text = ("\n\nHuman: Hi\n\nAssistant: Hello\n\nCritiqueRequest: Rude?\n\nCritique: No.\n\n"
            "RevisionRequest: Rewrite.\n\nRevision: Hello there!\n\nHuman:")
    assert transcript_to_messages(text) == [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Rude?"}, {"role": "assistant", "content": "No."},
        {"role": "user", "content": "Rewrite."}, {"role": "assistant", "content": "Hello there!"}]


def test_import_anthropic_paper(tmp_path, capsys):
    out = tmp_path / "paper.yaml"
    assert main(["constitution", "import", "--format", "anthropic-paper", str(FORMATS / "anthropic-paper"),
                 "--out", str(out), "--name", "paper"]) == 0
    assert capsys.readouterr().err == ""  # lints clean
    c = load_constitution(out)
    assert [p.id for p in c.critiques] == ["kind0", "kind1", "kind2"]
    assert c.critiques[0].critique == "Point out anything in the assistant's last response that is unkind."
    assert c.critiques[0].revision == "Rewrite the assistant's response so that it is kind."
    assert c.comparisons[0].instruction == "Please choose the assistant response that is kinder."
    assert [len(conv) for conv in c.few_shot.critique] == [6, 8]
    assert c.few_shot.critique[1][2].content == "It didn't work."
    ex = c.few_shot.comparison
    assert [e.answer for e in ex] == ["A", "B", "A"]  # alternated, then the chain-of-thought example
    assert ex[1].response_b.startswith("Many shops") and ex[2].rationale.startswith("(A) answers")
    assert ex[2].prompt[0].content == "What's a good name for a cat?"
    assert main(["constitution", "import", "--format", "anthropic-paper", str(FORMATS / "anthropic-paper"),
                 "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_import_hf_recipe(tmp_path, capsys):
    out = tmp_path / "hf.yaml"
    assert main(["constitution", "import", "--format", "hf-recipe", str(FORMATS / "hf_recipe.json"),
                 "--out", str(out)]) == 0
    assert capsys.readouterr().err == ""
    c = load_constitution(out)
    assert c.name == "hf_recipe" and len(c.critiques) == 3 and len(c.few_shot.critique) == 2
    assert c.critiques[1].revision == "Please rewrite the response to remove any help with breaking the law."


def test_import_errors(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"constitutions": [\n  {"critic": "x"}\n]}')
    assert main(["constitution", "import", "--format", "hf-recipe", str(bad), "--out", str(tmp_path / "o.yaml")]) == 2
    assert "bad.json: constitutions[0]: expected {critic: str, revision: str}" in capsys.readouterr().err
    bad.write_text('{"constitutions": [\n  {"critic": "x",}\n]}')
    assert main(["constitution", "import", "--format", "hf-recipe", str(bad), "--out", str(tmp_path / "o.yaml")]) == 2
    assert "bad.json:2:" in capsys.readouterr().err


def test_import_real_fixtures(tmp_path, capsys):
    assert REAL.is_dir(), f"the real fixtures live in {REAL} (../shared/fixtures beside the checkout)"
    out = tmp_path / "paper.yaml"
    assert main(["constitution", "import", "--format", "anthropic-paper", str(REAL / "anthropic-cai-paper"),
                 "--out", str(out)]) == 0
    c = load_constitution(out)
    assert (len(c.critiques), len(c.comparisons)) == (16, 16)
    out = tmp_path / "hf.yaml"
    assert main(["constitution", "import", "--format", "hf-recipe",
                 str(REAL / "hf-llm-swarm-cai" / "constitution_anthropic.json"), "--out", str(out)]) == 0
    c = load_constitution(out)
    assert (len(c.critiques), len(c.few_shot.critique)) == (16, 4)
    assert capsys.readouterr().err == ""  # both lint clean


def test_cli_subprocess_exit_codes(tmp_path):
    bad = HERE / "constitutions" / "malformed" / "09_weight_zero.yaml"
    cmd = [sys.executable, "-m", "cai.cli", "constitution", "lint", str(bad)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=60, check=False,
                       env={**os.environ, "PYTHONPATH": str(HERE.parent)})
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().endswith("09_weight_zero.yaml:8:13: comparisons[0].weight: "
                                     "weight must be a positive number, got 0.0")
    assert len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run([sys.executable, "-m", "cai.cli", "constitution", "lint", "harmless"], capture_output=True,
                       text=True, cwd=tmp_path, timeout=60, check=False, env={**os.environ, "PYTHONPATH": str(HERE.parent)})
    assert r.returncode == 0 and "harmless: ok" in r.stdout


def test_new_writes_a_commented_starter_that_lints_clean(tmp_path, monkeypatch, capsys):
    from cai.constitution.lint import lint
    monkeypatch.setenv("CAI_CONSTITUTIONS_DIR", str(tmp_path))  # a checkout's constitutions/ folder
    assert main(["constitution", "new", "polite"]) == 0
    out = capsys.readouterr()
    path = tmp_path / "polite.yaml"
    assert out.err == "" and out.out.splitlines()[-1] == \
        "next: edit it, then `cai run configs/quickstart.yaml vars.constitution=polite`"
    c = load_constitution("polite")  # found by name, as `vars.constitution=polite` finds it
    assert c.name == "polite" and lint(c) == []
    assert [p.id for p in c.critiques] == ["harm", "honesty", "helpfulness"]
    assert [p.id for p in c.comparisons] == ["harmless", "helpful-and-honest"]
    assert c.contrast.harmful.positive.generate is False and c.contrast.benign.negative.prefix
    text = path.read_text()
    assert text.count("\n# ") > 20  # every section says what reads it
    # the checks example is there, commented out (the schema of checks is validated where it is declared)
    block = text[text.index("\n# checks:\n"):]
    assert all(ln.startswith("#") for ln in block.strip().splitlines())
    assert "grader: refusal" in block and "applies_to: harmful" in block and "want: fail" in block
    assert main(["constitution", "lint", "--strict", "polite"]) == 0


def test_new_never_replaces_a_file_and_checks_the_name(tmp_path):
    out = tmp_path / "mine.yaml"
    out.write_text("name: mine\nversion: '1'\n")
    for argv, message in ((["mine", "--out", str(out)], f"cai: error: {out}: already exists; edit it, or choose "
                           "another NAME or --out"),
                          (["bad name"], "cai: error: NAME: 'bad name' is not a constitution name (letters, "
                           "digits, '.', '_', '-'; a letter or digit first)")):
        r = subprocess.run([sys.executable, "-m", "cai", "constitution", "new", *argv], cwd=tmp_path,
                           capture_output=True, text=True, env={**os.environ, "CAI_CONSTITUTIONS_DIR": str(tmp_path)})
        assert (r.returncode, r.stderr.splitlines(), r.stdout) == (2, [message], "")
    assert out.read_text() == "name: mine\nversion: '1'\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.yaml"]
