"""Output directories and inputs: `--overwrite` removes only what cai wrote, one writer at a time, input
columns never replace cai's, and resumes are keyed by what the inputs say, not by their path."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cai.data.layout import read_config, write_dataset
from cai.data.sources import load_prompts
from cai.data.store import RunDir
from cai.engine.base import SamplingParams
from cai.engine.cached import CachedEngine
from cai.errors import InputError

REPO = Path(__file__).resolve().parents[1]


def _jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_overwrite_removes_only_what_cai_wrote(tmp_path):
    out = tmp_path / "o"
    RunDir(out, {"x": 1}).release()
    write_dataset(out, {"responses": [{"id": "a"}]}, {"rows": 1}, title="t")
    (out / "notes.md").write_text("mine")  # the user's own files in a cai output directory
    (out / "figures").mkdir()
    (out / "figures" / "plot.png").write_bytes(b"png")
    RunDir(out, {"x": 2}, overwrite=True).release()
    assert (out / "notes.md").read_text() == "mine" and (out / "figures" / "plot.png").read_bytes() == b"png"
    assert not (out / "responses").exists() and not (out / "manifest.json").exists()
    assert json.loads((out / ".cai" / "run.json").read_text())["config"] == {"x": 2}


def test_a_second_process_cannot_write_the_same_directory(tmp_path):
    out = tmp_path / "o"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]);"
                               "from cai.data.store import RunDir; r = RunDir(sys.argv[2], {'x': 1});"
                               "print('locked', flush=True); time.sleep(60)", str(REPO), str(out)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.perf_counter()
        with pytest.raises(InputError, match=rf"another cai process \(pid {holder.pid}\) is writing"):
            RunDir(out, {"x": 1})
        assert time.perf_counter() - t0 < 5  # fails at once, does not wait
    finally:
        holder.kill()
        holder.wait()
    RunDir(out, {"x": 1}).release()  # the kernel dropped the lock with the process


def test_input_columns_never_replace_cai_columns(tmp_path, hf_engine):
    from cai.generate import generate
    # an hh-rlhf-like source: its own `chosen`, `response`, `messages` and `model_id` columns
    prompts = _jsonl(tmp_path / "p.jsonl", [
        {"id": "a", "prompt": "Say hi.", "response": "THEIR RESPONSE", "chosen": "their chosen",
         "messages": [{"role": "user", "content": "x"}], "model_id": "their-model", "input_chosen": "kept too"}])
    generate(prompts=str(prompts), out=str(tmp_path / "o"), engine=CachedEngine(hf_engine, None),
             params=SamplingParams(temperature=0, max_tokens=4))
    [row] = read_config(tmp_path / "o", "responses")
    assert row["response"] != "THEIR RESPONSE" and row["messages"][-1]["content"] == row["response"]
    assert row["model_id"] == str(hf_engine.model_id)
    assert row["input_response"] == "THEIR RESPONSE" and row["input_model_id"] == "their-model"
    assert row["input_input_chosen"] == "their chosen" and row["input_chosen"] == "kept too"


def test_prompt_column_of_mixed_types_fails_at_load(tmp_path):
    p = _jsonl(tmp_path / "p.jsonl", [{"id": "a", "prompt": "x", "meta": 1}, {"id": "b", "prompt": "y", "meta": None},
                                       {"id": "c", "prompt": "z", "meta": [1]}])
    with pytest.raises(InputError, match=r"p\.jsonl:3:28: meta: column 'meta' holds a list here but a number on line 1"):
        load_prompts(p)


def test_generate_resume_is_keyed_by_prompt_content(tmp_path, hf_engine):
    from cai.generate import generate
    prompts = _jsonl(tmp_path / "p.jsonl", [{"id": "a", "prompt": "Say the word apple."}, {"id": "b", "prompt": "Hi."}])
    eng = CachedEngine(hf_engine, None)
    sp = SamplingParams(temperature=0, max_tokens=4)
    generate(prompts=str(prompts), out=str(tmp_path / "o"), engine=eng, params=sp)
    # the same file path, one prompt edited: the old answer must not be joined to the new text
    _jsonl(prompts, [{"id": "a", "prompt": "Count from one to five."}, {"id": "b", "prompt": "Hi."}])
    with pytest.raises(InputError, match=r"\(changed: prompts\)"):
        generate(prompts=str(prompts), out=str(tmp_path / "o"), engine=eng, params=sp)
    # the same content under another path resumes (nothing regenerated)
    moved = _jsonl(tmp_path / "moved.jsonl", [{"id": "a", "prompt": "Say the word apple."}, {"id": "b", "prompt": "Hi."}])
    before = eng.engine_requests
    m = generate(prompts=str(moved), out=str(tmp_path / "o2"), engine=eng, params=sp)
    assert m["engine_requests"] == before + 2
    m = generate(prompts=str(prompts.rename(tmp_path / "renamed.jsonl")), out=str(tmp_path / "o"), engine=eng,
                 params=sp, overwrite=True)
    rows = {r["id"]: r for r in read_config(tmp_path / "o", "responses")}
    assert rows["a"]["prompt"] == "Count from one to five." and rows["a"]["messages"][0]["content"] == rows["a"]["prompt"]


def test_sample_and_label_resume_keyed_by_content(tmp_path, hf_engine):
    from cai.feedback.config import LabelConfig, SampleConfig
    from cai.feedback.label import label
    from cai.feedback.sample import sample
    eng = CachedEngine(hf_engine, None)
    prompts = _jsonl(tmp_path / "p.jsonl", [{"id": "a", "prompt": "Say the word apple."}])
    cfg = SampleConfig(n=2, max_tokens=4)
    sample(prompts=str(prompts), out=str(tmp_path / "s"), engine=eng, config=cfg)
    _jsonl(prompts, [{"id": "a", "prompt": "Count from one to five."}])
    with pytest.raises(InputError, match=r"\(changed: prompts\)"):
        sample(prompts=str(prompts), out=str(tmp_path / "s"), engine=eng, config=cfg)
    pairs = _jsonl(tmp_path / "pairs.jsonl", [{"id": "x", "prompt": "Hi?", "response_a": "Hello!", "response_b": "No."}])
    lcfg = LabelConfig(few_shot=False)
    label(data=str(pairs), out=str(tmp_path / "l"), constitution="harmless", engine=eng, config=lcfg)
    _jsonl(pairs, [{"id": "x", "prompt": "Hi?", "response_a": "Go away.", "response_b": "No."}])
    with pytest.raises(InputError, match=r"\(changed: data\)"):
        label(data=str(pairs), out=str(tmp_path / "l"), constitution="harmless", engine=eng, config=lcfg)
    label(data=str(pairs), out=str(tmp_path / "l"), constitution="harmless", engine=eng, config=lcfg, overwrite=True)
    [row] = read_config(tmp_path / "l", "prefs")
    assert {row["chosen"][0]["content"], row["rejected"][0]["content"]} == {"Go away.", "No."}


def test_normalize_with_reads_policy_samples(tmp_path, tiny_model):
    from transformers import AutoTokenizer

    from cai.train.config import RMConfig
    from cai.train.rm import normalization_sequences
    write_dataset(tmp_path / "fb", {
        "samples": [{"id": "a:0", "prompt": "Hi?", "response": "Hello!"}, {"id": "a:1", "prompt": "Hi?", "response": None},
                    {"id": "b:0", "prompt": "Bye?", "response": "Bye!"}],
        "prefs": [{"prompt": "x", "chosen": "y", "rejected": "z"}]}, {}, title="t")
    tok = AutoTokenizer.from_pretrained(tiny_model)
    seqs, source = normalization_sequences(RMConfig(normalize_with=str(tmp_path / "fb")), tok, None)
    want = tok.apply_chat_template([{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello!"}],
                                   tokenize=True, return_dict=True)["input_ids"]
    assert len(seqs) == 2 and seqs[0] == list(want) and source.endswith("(samples)")  # the failed sample is skipped
