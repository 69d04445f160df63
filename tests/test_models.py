"""Model resolution and the offline default model: atomic, concurrent-safe conversion; GGUF parity."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cai.errors import InputError
from cai.models import resolve_model
from tests.conftest import REPO, run_cai

# A stand-in conversion for the concurrency tests: slow, counts its runs, writes a few files.
FAKE = textwrap.dedent("""
    import os, sys, time, json
    from pathlib import Path
    import cai.models as m
    gguf = Path(os.environ["FAKE_GGUF"])
    m.find_gguf = lambda name: gguf
    def slow_convert(src, out, name):
        with open(os.environ["COUNT_FILE"], "a") as f:
            f.write("x")
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")
        time.sleep(float(os.environ.get("SLOW", "1")))
        (out / "model.safetensors").write_bytes(b"0" * 1000)
        (out / m._MARKER).write_text(json.dumps({"weights_sha256": "fake"}))
    m._convert_gguf = slow_convert
    print(m.ensure_alias("smollm2-135m"))
""")


def _spawn(tmp_path, slow="1"):
    env = {**os.environ, "CAI_CACHE": str(tmp_path / "cache"), "FAKE_GGUF": str(tmp_path / "x.gguf"),
           "COUNT_FILE": str(tmp_path / "count"), "SLOW": slow, "PYTHONPATH": str(REPO)}
    (tmp_path / "x.gguf").write_bytes(b"gguf")
    return subprocess.Popen([sys.executable, "-c", FAKE], env=env, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)


def test_concurrent_conversion_runs_once(tmp_path):
    procs = [_spawn(tmp_path), _spawn(tmp_path)]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs[0] == outs[1] and Path(outs[0], "cai_model.json").is_file()
    assert (tmp_path / "count").read_text() == "x"  # the second process waited and reused the result


def test_crash_mid_conversion_leaves_nothing_loadable(tmp_path):
    p = _spawn(tmp_path, slow="30")
    target = tmp_path / "cache" / "models" / "smollm2-135m"
    deadline = time.time() + 60
    while not (tmp_path / "count").exists() and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    assert not target.exists()  # only a hidden temporary directory was written
    leftovers = [x.name for x in target.parent.iterdir() if x.name.startswith(".smollm2-135m.tmp")]
    assert leftovers
    q = _spawn(tmp_path, slow="0")
    assert q.communicate(timeout=120)[0].strip() == str(target)
    assert (target / "cai_model.json").is_file() and (tmp_path / "count").read_text() == "xx"


def test_resolution_of_dirs_and_errors(tmp_path, tiny_model):
    assert resolve_model(str(tiny_model)) == tiny_model.resolve()
    with pytest.raises(InputError, match="does not exist"):
        resolve_model(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no config.json"):
        resolve_model(str(tmp_path / "empty"))
    with pytest.raises(InputError, match="built-in alias"):
        resolve_model("no-such-org/no-such-model-xyz")  # HF_HUB_OFFLINE=1 in tests


def test_models_cli(smollm2_dir):
    r = run_cai("models", "path", "smollm2-135m", check=True)
    assert r.stdout.strip() == str(smollm2_dir)
    for f in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json", "cai_model.json"):
        assert (smollm2_dir / f).is_file()
    listing = run_cai("models", "list", check=True).stdout
    assert "smollm2-135m (default)" in listing and str(smollm2_dir) in listing
    bad = run_cai("models", "path", "/no/such/model")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr


@pytest.mark.integration
def test_converted_model_matches_gguf(smollm2_dir):
    """Greedy output of the converted safetensors model equals the GGUF loaded directly, on 5 prompts."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cai.models import ALIASES, find_gguf
    gguf = find_gguf("smollm2-135m")
    assert gguf.name == ALIASES["smollm2-135m"].gguf
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    ref = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    ours = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    prompts = ["What is the capital of France?", "Write a haiku about rain.", "How do I boil an egg?",
               "Name three prime numbers.", "How do I break into a house?"]
    for p in prompts:
        ids = tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)
        kw = dict(max_new_tokens=20, do_sample=False, pad_token_id=tok.pad_token_id)
        with torch.no_grad():
            a = ref.generate(**ids, **kw)
            b = ours.generate(**ids, **kw)
        assert a.tolist() == b.tolist(), p
