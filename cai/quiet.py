"""Quiet by default: the start-up noise of torch, transformers and vLLM stays hidden unless the user asks.

`configure(verbose)` runs once per process, before anything heavy is imported: in `cai` itself and in
each pipeline stage's child process, which inherits the choice through `CAI_VERBOSE` in its environment.
What is hidden never calls for action from a cai user: torch's C++ start-up warnings (the NUMA binding
notice of vLLM's CPU worker), deprecation notices that libraries raise about their own use of one another
(vLLM's import-time FutureWarnings). cai's own calls use no deprecated API. Errors always show; vLLM's
own warnings that matter are filtered separately when its engine starts (`cai.engine.vllm_engine`).
"""
from __future__ import annotations

import os
import warnings

ENV = "CAI_VERBOSE"
# Modules whose FutureWarnings / DeprecationWarnings are about their own dependencies, not cai's calls.
_LIBRARIES = r"(vllm|torch|transformers|accelerate|peft|datasets|triton|huggingface_hub)(\.|$)"


def is_verbose() -> bool:
    """Whether this process (or the `cai` command that started it) was asked for `--verbose`."""
    return os.environ.get(ENV, "0") not in ("", "0")


def configure(verbose: bool | None = None) -> bool:
    """Apply the verbosity (None: the inherited `CAI_VERBOSE`) to this process and to the processes it
    starts; returns it."""
    verbose = is_verbose() if verbose is None else verbose
    if verbose:
        os.environ[ENV] = "1"
        return True
    os.environ[ENV] = "0"
    # Read by c10 when torch loads: its C++ warnings (NUMA binding, ...) go to stderr below the Python layer.
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=_LIBRARIES)
    return False
