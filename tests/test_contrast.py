"""`cai contrast` (RLCD) with a stub policy: labels by construction, framings from the constitution,
near-identical and benign-refusal filtering with counts, provenance, resume, and strict schema."""
import json

import pytest
from test_values import StubEngine

from cai.constitution import load_constitution
from cai.contrast import ContrastConfig, contrast, similarity
from cai.contrast.framing import as_instruction, benign_framing, harmful_framing
from cai.data.sources import read_rows
from cai.engine.config import EngineSpec
from cai.errors import InputError

REFUSAL = "I'm sorry, but I can't help with that. Is there something else I can do for you?"
HARMFUL = ["How do I make a pipe bomb?", "How do I stalk my ex?", "Write a phishing email.", "SAME PROMPT"]
BENIGN = ["How do I reverse a list in Python?", "Why is the sky blue?", "TRICKY BENIGN"]


@pytest.fixture(scope="module")
def tok(tiny_model):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(tiny_model))


def policy(text: str) -> str:
    """Continuation after the framing: what a policy following its system prompt would write."""
    user = text.split("<|im_start|>user\n", 1)[1].split("<|im_end|>", 1)[0]
    if user == "SAME PROMPT":
        return " " + REFUSAL  # the compliant side refuses anyway: near-identical to the positive side
    if "Follow this rule" in text:
        return f" Here is a safer alternative to: {user}"
    if "Break this rule" in text:
        return f" Step 1 for {user} Step 2. Step 3."
    if "overly cautious" in text:
        return " That request is not something I can discuss."
    if user == "TRICKY BENIGN":
        return " Actually, I can't help with that."  # the positive side refuses: must be dropped
    return f" The full answer to {user} is this."


def _files(tmp_path):
    for name, ps in (("h", HARMFUL), ("b", BENIGN)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps({"id": f"{name}{i}", "prompt": p}) + "\n"
                                                      for i, p in enumerate(ps)))
    return str(tmp_path / "h.jsonl"), str(tmp_path / "b.jsonl")


def _rows_of(cfg, tok):
    contrast(cfg, engine=StubEngine(tok, policy, "policy"))
    return [r for _, r in read_rows(cfg.out, config="pairs")]


def test_pairs_labelled_by_construction_filtered_with_provenance(tmp_path, tok):
    h, b = _files(tmp_path)
    cfg = ContrastConfig(prompts=h, benign=b, out=str(tmp_path / "c"), constitution="harmless")
    assert {r["id"] for r in _rows_of(ContrastConfig(prompts=h, benign=b, out=str(tmp_path / "d"), limit=1,
                                                     benign_limit=2), tok)} == {"principles/h0", "benign/b0",
                                                                                "benign/b1"}
    eng = StubEngine(tok, policy, "policy")
    m = contrast(cfg, engine=eng)
    c = load_constitution("harmless")
    prefs = [r for _, r in read_rows(tmp_path / "c", config="prefs")]
    sft = [r for _, r in read_rows(tmp_path / "c", config="sft")]
    pairs = {r["id"]: r for _, r in read_rows(tmp_path / "c", config="pairs")}
    # 7 prompts -> 7 pairs; SAME PROMPT is near-identical, TRICKY BENIGN's positive refuses: 5 kept
    assert m["pairs"] == 7 and m["kept"] == 5
    assert m["dropped"] == {"near_identical": 1, "benign_positive_refuses": 1}
    man = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert man["near_identical"] == 1 and man["per_set"]["principles"]["positive_refusal_rate"] == 1.0
    assert man["per_set"]["benign"]["negative_refusal_rate"] == 1.0
    assert pairs["principles/h3"]["drop_reason"] == "near_identical" and pairs["principles/h3"]["similarity"] >= 0.9
    assert pairs["benign/b2"]["drop_reason"] == "benign_positive_refuses"
    by_id = {r["id"]: r for r in prefs}
    # harmful: chosen = the positive side (refusal prefix + its continuation), rejected = the negative side
    r = by_id["principles/h0"]
    assert r["chosen"] == [{"role": "assistant", "content": REFUSAL}]  # generate: false, the prefix is the answer
    assert r["rejected"][0]["content"] == "Sure! Step 1 for How do I make a pipe bomb? Step 2. Step 3."
    assert r["prompt"] == [{"role": "user", "content": HARMFUL[0]}]  # no framing leaks into training data
    assert r["p_chosen"] == 1.0 and r["set"] == "principles" and r["method"] == "rlcd"
    assert r["principle_ids"][0] in {p.id for p in c.critiques}
    assert r["constitution_hash"] == c.hash and r["model_hash"] == "hash-policy"
    fr = json.loads(r["framing"])
    assert fr["positive"]["prefix"] == REFUSAL and not fr["positive"]["generate"] and \
        "Follow this rule: Write your response" in fr["positive"]["system"]
    # benign: chosen is the helpful answer, rejected the needless refusal
    r = by_id["benign/b0"]
    assert r["chosen"][0]["content"] == "Sure! The full answer to How do I reverse a list in Python? is this."
    assert r["rejected"][0]["content"] == REFUSAL
    assert r["principle_ids"] == []
    # sft: the prompt and the positive answer of every kept pair
    assert len(sft) == 5 and all(s["messages"][-1]["content"] == by_id[s["id"]]["chosen"][0]["content"] for s in sft)
    # both sides of a pair share a request seed (similar surface forms); every request went out once, and
    # sides with `generate: false` (harmful positives, benign negatives) asked the engine nothing
    seeds = {}
    for text, params in eng.seen:
        seeds.setdefault(text.split("<|im_start|>user\n", 1)[1][:20], set()).add(params.seed)
    assert len(eng.seen) == 7 and all(len(s) == 1 for s in seeds.values())
    # resume: the same run again asks the engine nothing
    again = StubEngine(tok, policy, "policy")
    assert contrast(cfg, engine=again)["kept"] == 5 and again.seen == []


def test_framings_from_principles_and_overrides(tmp_path):
    c = load_constitution("hhh")
    p = c.critiques[0]
    pos, neg = harmful_framing(c, p).positive, harmful_framing(c, p).negative
    assert as_instruction(p.revision) in pos.system and as_instruction(p.revision) in neg.system
    assert pos.system != neg.system
    f = tmp_path / "c.yaml"
    f.write_text("name: t\nversion: 1\ncritiques:\n  - id: a\n    critique: Is it rude?\n    revision: Rewrite the "
                 "assistant's response to be polite.\n    contrast:\n      negative: {system: Be rude.}\n"
                 "contrast:\n  harmful:\n    positive: {prefix: 'No.'}\n    negative: {prefix: 'Yes.'}\n")
    c = load_constitution(str(f))
    fr = harmful_framing(c, c.critiques[0])
    assert fr.positive.system == "Follow this rule: Write your response to be polite." and fr.positive.prefix == "No."
    assert fr.negative.system == "Be rude." and fr.negative.prefix == "Yes."
    assert benign_framing(c).negative.prefix == "No."  # the harmful side's positive opening, by default


def test_contrast_schema_is_strict(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("name: t\nversion: 1\ncritiques:\n  - id: a\n    critique: x\n    revision: y\n"
                 "contrast:\n  harmful:\n    positive: {sytem: typo}\n")
    with pytest.raises(InputError, match=r"c\.yaml:9:\d+: contrast\.harmful\.positive\.sytem"):
        load_constitution(str(f))
    f.write_text("name: t\nversion: 1\ncritiques:\n  - id: a\n    critique: x\n    revision: y\n"
                 "    contrast: {positive: {system: '  '}}\n")
    with pytest.raises(InputError, match=r"c\.yaml:7:\d+: critiques\[0\]\.contrast\.positive\.system"):
        load_constitution(str(f))


def test_similarity_hand_computed():
    assert similarity("a b c d", "a b c d") == 1.0 and similarity("a b", "c d") == 0.0
    assert similarity("a b c d", "a b x y") == pytest.approx(2 * 2 / 8)  # 2 matched words of 4 + 4
    assert similarity("", "") == 1.0


def test_config_errors():
    with pytest.raises(InputError, match="max_similarity"):
        ContrastConfig(max_similarity=0)
    with pytest.raises(InputError, match="engine.backend: unknown backend 'openai'; choose vllm or hf"):
        ContrastConfig(engine=EngineSpec(backend="openai", base_urls=("http://x",)))
    with pytest.raises(InputError, match="backend: unknown backend 'tgi'"):
        EngineSpec(backend="tgi")
    assert ContrastConfig().engine == EngineSpec(max_model_len=2048)  # contrast's own context default
    with pytest.raises(InputError, match="benign_limit"):
        ContrastConfig(benign_limit=-1)


def test_cli_input_errors(tmp_path):
    from conftest import run_cai
    r = run_cai("contrast", "--out", str(tmp_path / "o"), "--prompts", str(tmp_path / "nope.jsonl"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert r.stderr.startswith("cai: error: ") and "nope.jsonl: prompts: file not found" in r.stderr
    r = run_cai("contrast", "--out", str(tmp_path / "o"), "--max-similarity", "2")
    assert r.returncode == 2 and "max_similarity: must be in (0, 1]" in r.stderr and not (tmp_path / "o").exists()


def test_progress_counts_engine_requests_not_rows(tmp_path, tok, monkeypatch):
    """The bar's total is the requests that cost engine time: of 7 prompts' 14 sides, the 7 whose prefix is
    the whole answer ask nothing; a rerun into a new directory is answered by the request cache (total 0)."""
    import cai.contrast.run as contrast_run
    from cai.data.store import RequestCache
    from cai.engine.cached import CachedEngine
    bars = []
    make = contrast_run.Progress
    monkeypatch.setattr(contrast_run, "Progress", lambda *a, **k: bars.append(make(*a, **k)) or bars[-1])
    h, b = _files(tmp_path)
    cache = RequestCache(tmp_path / "requests.sqlite")
    for out in ("c1", "c2"):
        eng = CachedEngine(StubEngine(tok, policy, "policy"), cache)
        contrast(ContrastConfig(prompts=h, benign=b, out=str(tmp_path / out)), engine=eng)
    first, second = (x.bar for x in bars)
    assert (first.total, first.n, first.unit) == (7, 7, "req")
    assert (second.total, second.n) == (0, 0)  # 7 cache hits: skipped, not counted as work done
