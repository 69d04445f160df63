"""Loading, `extends` merging, hashes and principle sampling of constitutions."""
import collections
from pathlib import Path

import pytest

from cai.constitution import PrincipleSampler, constitutions_dir, load_constitution
from cai.constitution.lint import lint
from cai.errors import InputError

SUPPORT = Path(__file__).parent / "constitutions" / "support"

BASE = """\
name: base
version: "1"
critiques:
  - id: harm
    critique: Is the assistant's response harmful?
    revision: Rewrite the response without the harm.
  - id: rude
    critique: Is the assistant's response rude?
    revision: Rewrite the response politely.
    weight: 2
    tags: [tone]
comparisons:
  - id: kind
    instruction: Choose the kinder response.
few_shot:
  critique:
    - - role: user
        content: Hi
      - role: assistant
        content: Go away.
      - role: user
        content: Is the assistant's response rude?
      - role: assistant
        content: Yes, it is dismissive.
      - role: user
        content: Rewrite the response politely.
      - role: assistant
        content: Hello! How can I help?
"""

# Same content as BASE, written differently: flow style, other key order, folded text, comments.
BASE_REFORMATTED = """\
# a comment
version: '1'
name: base
comparisons: [{instruction: "Choose the kinder response.", id: kind}]
critiques:
  - revision: Rewrite the response without the harm.
    critique: >-
      Is the assistant's
      response harmful?
    id: harm
  - {id: rude, weight: 2.0, tags: [tone],
     critique: "Is the assistant's response rude?", revision: 'Rewrite the response politely.'}
few_shot:
  critique:
    - [{role: user, content: Hi}, {role: assistant, content: Go away.},
       {role: user, content: "Is the assistant's response rude?"}, {role: assistant, content: "Yes, it is dismissive."},
       {role: user, content: Rewrite the response politely.}, {role: assistant, content: "Hello! How can I help?"}]
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# --- shipped constitutions -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["harmless", "hhh", "plain_language"])
def test_shipped_constitutions_load_and_lint_clean(name):
    c = load_constitution(name)
    assert c.name == name and len(c.hash) == 64
    assert lint(c) == []


def test_harmless_meets_the_issue():
    c = load_constitution("harmless")
    assert len(c.critiques) >= 16 and len(c.comparisons) >= 16
    assert len(c.few_shot.critique) >= 3 and len(c.few_shot.comparison) >= 3
    assert {ex.answer for ex in c.few_shot.comparison} == {"A", "B"}
    for conv in c.few_shot.critique:
        assert [m.role for m in conv][-6:] == ["user", "assistant"] * 3


def test_hhh_extends_harmless_and_penalises_evasion():
    harmless, hhh = load_constitution("harmless"), load_constitution("hhh")
    assert hhh.parents == ["harmless"]
    ids = [p.id for p in hhh.critiques]
    assert "children" not in ids and {"evasive", "honesty"} <= set(ids)
    assert ids.index("tone") < ids.index("violence") < ids.index("evasive")  # replaced in place, new appended
    assert "preachy" in hhh.critique("tone").critique
    assert any("benign" in p.instruction for p in hhh.comparisons)
    assert hhh.few_shot == harmless.few_shot  # inherited


def test_name_path_and_env_dir(tmp_path, monkeypatch):
    p = write(tmp_path, "base.yaml", BASE)
    assert load_constitution(p).name == "base"
    assert load_constitution(str(p)).source_path == p
    monkeypatch.setenv("CAI_CONSTITUTIONS_DIR", str(tmp_path))
    assert constitutions_dir() == tmp_path
    assert load_constitution("base").name == "base"
    with pytest.raises(InputError, match="available: base"):
        load_constitution("harmless")


# --- extends -------------------------------------------------------------------------------------

def test_extends_merges_by_id(tmp_path):
    write(tmp_path, "base.yaml", BASE)
    child = write(tmp_path, "child.yaml", """\
name: child
version: "2"
extends: base.yaml
remove: [harm]
system_prompt: Be kind.
critiques:
  - id: rude
    critique: Is the assistant's response rude or curt?
    revision: Rewrite the response warmly.
  - id: new
    critique: Is the assistant's response honest?
    revision: Rewrite the response honestly.
few_shot:
  comparison:
    - {prompt: Hi, response_a: Hello!, response_b: What., answer: A, principle: kind}
""")
    c = load_constitution(child)
    assert [p.id for p in c.critiques] == ["rude", "new"]
    assert c.critique("rude").weight == 1.0  # a redefinition replaces the whole principle
    assert [p.id for p in c.comparisons] == ["kind"]
    assert len(c.few_shot.critique) == 1 and len(c.few_shot.comparison) == 1  # critique examples inherited
    assert c.system_prompt == "Be kind." and c.parents == ["base"] and c.version == "2"


def test_extends_chain_and_parent_errors_name_parent_file(tmp_path):
    write(tmp_path, "base.yaml", BASE)
    write(tmp_path, "mid.yaml", "name: mid\nversion: '1'\nextends: base.yaml\nremove: [rude]\n")
    top = write(tmp_path, "top.yaml", "name: top\nversion: '1'\nextends: mid.yaml\n")
    c = load_constitution(top)
    assert c.parents == ["mid", "base"] and [p.id for p in c.critiques] == ["harm"]
    write(tmp_path, "base.yaml", BASE.replace("weight: 2", "weight: -2"))
    with pytest.raises(InputError) as e:
        load_constitution(top)
    assert "base.yaml:10:" in str(e.value) and "critiques[1].weight" in str(e.value)


def test_removing_a_principle_used_by_an_inherited_example(tmp_path):
    write(tmp_path, "base.yaml", BASE + """\
  comparison:
    - {prompt: Hi, response_a: Hello!, response_b: What., answer: A, principle: kind}
""")
    child = write(tmp_path, "child.yaml", "name: c\nversion: '1'\nextends: base.yaml\nremove: [kind]\n")
    with pytest.raises(InputError, match="no comparison principle has id 'kind' .it was removed in"):
        load_constitution(child)


# --- hashes --------------------------------------------------------------------------------------

def test_reformatting_changes_no_hash(tmp_path):
    a = load_constitution(write(tmp_path, "a.yaml", BASE))
    b = load_constitution(write(tmp_path, "b.yaml", BASE_REFORMATTED))
    assert a.hash == b.hash
    assert [p.hash for p in a.critiques] == [p.hash for p in b.critiques]
    assert [p.hash for p in a.comparisons] == [p.hash for p in b.comparisons]


def test_editing_one_principle_changes_only_its_hash(tmp_path):
    a = load_constitution(write(tmp_path, "a.yaml", BASE))
    b = load_constitution(write(tmp_path, "b.yaml", BASE.replace("Rewrite the response politely.",
                                                                   "Rewrite the response very politely.", 1)))
    changed = [p.id for p, q in zip(a.critiques, b.critiques) if p.hash != q.hash]
    assert changed == ["rude"]
    assert [p.hash for p in a.comparisons] == [p.hash for p in b.comparisons]
    assert a.hash != b.hash


def test_hash_ignores_metadata_but_covers_prompts(tmp_path):
    a = load_constitution(write(tmp_path, "a.yaml", BASE))
    renamed = load_constitution(write(tmp_path, "b.yaml", BASE.replace("name: base", "name: other")
                                      .replace('version: "1"', 'version: "9"')))
    assert renamed.hash == a.hash  # name/version are provenance, not content
    with_system = load_constitution(write(tmp_path, "c.yaml", BASE + "system_prompt: Be brief.\n"))
    assert with_system.hash != a.hash
    tpl = write(tmp_path, "crit.j2", "{{ principle.critique }}\n")
    with_tpl = load_constitution(write(tmp_path, "d.yaml", BASE + "templates:\n  critique: crit.j2\n"))
    assert with_tpl.hash != a.hash  # the default critique.j2 has a comment header; this file does not
    tpl.write_text("{{ principle.critique }} Be specific.\n")
    assert load_constitution(tmp_path / "d.yaml").hash != with_tpl.hash


def test_resolved_hash_equals_flattened_file(tmp_path):
    write(tmp_path, "base.yaml", BASE)
    child = load_constitution(write(tmp_path, "child.yaml",
                                    "name: child\nversion: '1'\nextends: base.yaml\nremove: [harm]\n"))
    flat = load_constitution(write(tmp_path, "flat.yaml", BASE.replace("""\
  - id: harm
    critique: Is the assistant's response harmful?
    revision: Rewrite the response without the harm.
""", "")))
    assert child.hash == flat.hash


# --- sampling ------------------------------------------------------------------------------------

def _principles(tmp_path, text=BASE):
    return load_constitution(write(tmp_path, "s.yaml", text)).critiques


def test_sampler_is_deterministic_and_order_independent(tmp_path):
    ps = _principles(tmp_path)
    s1, s2 = PrincipleSampler(ps, seed=3), PrincipleSampler(list(reversed(ps)), seed=3)
    keys = [f"p{i}:{r}" for i in range(50) for r in range(3)]
    first = [s1.sample_ids(k, k=2) for k in keys]
    assert [s2.sample_ids(k, k=2) for k in reversed(keys)] == first[::-1]
    assert [PrincipleSampler(ps, seed=4).sample_ids(k, 2) for k in keys] != first
    assert s1.sample_ids("p0:0", k=2)[0] == s1.sample_ids("p0:0", k=1)[0]  # k extends, it does not reshuffle


def test_sampler_honours_weights(tmp_path):
    s = PrincipleSampler(_principles(tmp_path), seed=0)  # harm weight 1, rude weight 2
    counts = collections.Counter(pid for i in range(3000) for pid in s.sample_ids(f"k{i}"))
    assert abs(counts["rude"] / 3000 - 2 / 3) < 0.03
    many = s.sample_ids("one-key", k=200)
    assert len(set(many)) == 2  # with replacement


def test_editing_text_changes_no_draw_and_adding_changes_only_its_wins(tmp_path):
    keys = [f"p{i}:{r}" for i in range(300) for r in range(2)]
    before = PrincipleSampler(_principles(tmp_path), seed=0)
    edited = PrincipleSampler(_principles(tmp_path, BASE.replace("rude?", "impolite?")), seed=0)
    assert [before.sample_ids(k) for k in keys] == [edited.sample_ids(k) for k in keys]
    added = PrincipleSampler(_principles(tmp_path, BASE.replace("comparisons:", """\
  - id: extra
    critique: Is the assistant's response vague?
    revision: Rewrite the response concretely.
comparisons:""")), seed=0)
    for k in keys:
        new = added.sample_ids(k)[0]
        assert new == "extra" or new == before.sample_ids(k)[0]


def test_sampler_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError):
        PrincipleSampler([])
    with pytest.raises(ValueError):
        PrincipleSampler(_principles(tmp_path)).sample("k", k=0)
