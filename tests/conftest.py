"""Shared fixtures. Tests run on CPU with no network: a tiny random Llama (SmolLM2 tokenizer) for most,
real SmolLM2-135M for a few `integration` tests. vLLM allows one engine per process, so the in-process
vLLM engine is one session-wide fixture; anything needing a second engine runs in a subprocess."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("CAI_VLLM_CPU_MEM", "0.3")

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Tests write only under tmp: `CAI_CACHE` (models made by tests, hash memos, request cache, reference
    log-probs) points at a session directory. The converted SmolLM2 alias is linked in read-only from the
    user's cache when it is there (converting it again would take minutes), else converted here."""
    real = Path(os.environ.get("CAI_CACHE", "~/.cache/cai")).expanduser()
    cache = tmp_path_factory.mktemp("cai-cache")
    (cache / "models").mkdir()
    for name in ("smollm2-135m",):
        if (real / "models" / name / "cai_model.json").is_file():
            (cache / "models" / name).symlink_to(real / "models" / name, target_is_directory=True)
    old = os.environ.get("CAI_CACHE")
    os.environ["CAI_CACHE"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("CAI_CACHE", None)
    else:
        os.environ["CAI_CACHE"] = old


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    from cai.models import resolve_model
    return resolve_model("smollm2-135m")


@pytest.fixture(scope="session")
def tiny_model(smollm2_dir) -> Path:
    from cai.testing import make_tiny_model
    return make_tiny_model()


@pytest.fixture(scope="session")
def vllm_engine(tiny_model):
    """The one in-process vLLM engine of the test session (tiny model)."""
    from cai.engine.vllm_engine import VLLMEngine
    # A small fixed KV cache skips vLLM's memory profiling: the engine starts in seconds.
    engine = VLLMEngine(str(tiny_model), max_model_len=2048, enforce_eager=True,
                        kv_cache_memory_bytes=256 * 2**20, max_num_seqs=64)
    yield engine


@pytest.fixture(scope="session")
def hf_engine(tiny_model):
    from cai.engine.hf_engine import HFEngine
    return HFEngine(str(tiny_model), max_model_len=2048)


@pytest.fixture
def cache_path(tmp_path) -> Path:
    return tmp_path / "requests.sqlite"


def run_cai(*args: str, env: dict | None = None, timeout: float = 600, check: bool = False):
    """Run the CLI in a subprocess (its own engine, its own process)."""
    import subprocess
    e = {**os.environ, **(env or {})}
    r = subprocess.run([PY, "-m", "cai.cli", *args], cwd=REPO, env=e, capture_output=True, text=True,
                       timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"cai {' '.join(args)} -> {r.returncode}\n{r.stderr[-3000:]}")
    return r


def kill9_at_checkpoint_then_resume(cmd: list[str], out: Path, step: int, step_delay: float,
                                    timeout: float) -> dict:
    """The trainers' durability harness: run `cmd run.output_dir=OUT` with a per-step delay, SIGKILL it once
    the step-`step` checkpoint exists (asserting it had not finished and wrote no final model), rerun it
    with `--resume` (asserting exit 0), and return the resumed run's final weights."""
    import signal
    import subprocess
    import time

    from safetensors.torch import load_file
    env = {**os.environ, "CAI_TRAIN_STEP_DELAY": str(step_delay)}
    proc = subprocess.Popen(cmd + [f"run.output_dir={out}"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while not (out / "checkpoints" / f"step-{step}" / "state.json").is_file():
        assert proc.poll() is None, "finished before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "model.safetensors").exists()
    r = subprocess.run(cmd + [f"run.output_dir={out}", "--resume"], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    return load_file(str(out / "model.safetensors"))


def max_weight_diff(a: dict, b: dict) -> float:
    """Largest absolute difference between two state dicts with the same keys."""
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)



def one_error_line(r, *needles: str) -> str:
    """A CLI mistake's contract: exit 2, no traceback, and one `cai: error:` line holding each of `needles`
    (torch's NUMA start-up note is not cai's and is ignored). Returns the line."""
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = [ln for ln in r.stderr.splitlines() if "NUMA" not in ln]
    assert len(lines) == 1 and lines[0].startswith("cai: error: "), r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]
