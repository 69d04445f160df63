"""Small datasets in the exact shape `cai rlaif` and `cai critique` write, built without a model: the rows
go through the stages' own table functions (`prefs_table`, `sample_tables`' pair shape, `rows_of`), so the
page and the export are tested against what the stages really produce. For tests and for trying the page:

    python -c "from cai.labelui.fixtures import make_rlaif_dataset; make_rlaif_dataset('out/demo', 8)"
    cai label-ui --data out/demo
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from cai.critique.config import CritiqueConfig
from cai.critique.conversation import rows_of
from cai.data.layout import write_dataset
from cai.feedback.label import prefs_table

PRINCIPLES = ("least-harmful", "harmless-ethical", "hhh")
CRITIQUES = ("harm-general", "harm-to-others")


def rlaif_pairs(n: int, texts: dict[int, tuple[str, str]] | None = None) -> list[dict[str, Any]]:
    """The `pairs` rows of n prompts (one pair each); `texts` overrides (response_a, response_b) of pair i."""
    out = []
    for i in range(n):
        a, b = (texts or {}).get(i, (f"Response one to question {i}: I would rather not help with that.",
                                     f"Response two to question {i}: here is a careful, safe answer."))
        out.append({"id": f"p{i}:0-1", "prompt_id": f"p{i}", "prompt": f"Question {i}: how do I do thing {i}?",
                    "response_a": a, "response_b": b, "sample_a": 0, "sample_b": 1})
    return out


def make_rlaif_dataset(out: str | Path, n: int = 8, *, p_ab: list[float] | None = None,
                       texts: dict[int, tuple[str, str]] | None = None, unlabelled: int = 0) -> Path:
    """A `cai rlaif`-shaped dataset (`pairs` + `prefs`): n pairs, pair i labelled with p(a first) = p_ab[i]
    in both orders (so p(a better) = p_ab[i]) under principle PRINCIPLES[i % 3]; `unlabelled` extra pairs
    exist only in `pairs` (the judge never labelled them)."""

    p_ab = p_ab or [0.2 + 0.6 * i / max(1, n - 1) for i in range(n)]
    pairs = rlaif_pairs(n + unlabelled, texts)
    labelled = pairs[:n]
    done = {r["id"]: {"key": r["id"], "skip": None, "error": None, "p_ab": p_ab[i], "p_ba": 1.0 - p_ab[i],
                      "principle_ids": [PRINCIPLES[i % len(PRINCIPLES)]], "mass_outside": 0.01, "floored": False,
                      "truncated": False, "rationale": "", "rationale_ba": "", "response_a": r["response_a"],
                      "response_b": r["response_b"]} for i, r in enumerate(labelled)}
    prov = {"model_id": "fixture", "model_hash": "0" * 16, "engine": "none", "seed": 0, "sampling": "{}",
            "cai_version": "test", "constitution": "harmless", "constitution_hash": "c0ffee", "role": "judge"}
    prefs, stats = prefs_table(labelled, done, prov)
    write_dataset(out, {"pairs": pairs, "prefs": prefs}, {"stage": "rlaif", **stats},
                  title="fixture: cai rlaif layout")
    return Path(out)


def make_critique_dataset(out: str | Path, n: int = 3, rounds: int = 2) -> Path:
    """A `cai critique`-shaped dataset (`sft`, `prefs`, `trace`) of n conversations with `rounds` rounds."""

    tables: dict[str, list] = {"sft": [], "prefs": [], "trace": []}
    prov = {"model_id": "fixture", "seed": 0, "constitution": "harmless", "constitution_hash": "c0ffee"}
    for i in range(n):
        steps = [{"step": "answer", "round": 0, "request": None, "text": f"Initial answer {i}.", "tokens": 3,
                  "prompt_tokens": 9, "finish_reason": "stop"}]
        for r in range(1, rounds + 1):
            steps.append({"step": "critique", "round": r, "request": f"Critique request {r}?",
                          "text": f"Critique {r} of conversation {i}.", "tokens": 5, "prompt_tokens": 20,
                          "finish_reason": "stop"})
            steps.append({"step": "revision", "round": r, "request": f"Revision request {r}.",
                          "text": f"Revision {r} of conversation {i}.", "tokens": 5, "prompt_tokens": 30,
                          "finish_reason": "stop"})
        rec = {"id": f"c{i}", "principle_ids": [CRITIQUES[r % 2] for r in range(rounds)],
               "principle_hashes": ["h"] * rounds, "steps": steps, "error": None}
        for k, rows in rows_of(rec, {"id": f"c{i}", "prompt": f"Red-team prompt {i}"}, CritiqueConfig(), prov,
                               "kept", None).items():
            tables[k].extend(rows)
    write_dataset(out, tables, {"stage": "critique"}, title="fixture: cai critique layout")
    return Path(out)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data: str | Path, *args: str, port: int | None = None, timeout: float = 60.0, env=None,
                 ca: str | Path | None = None):
    """`python -m cai.cli label-ui --data DATA --port PORT ARGS...` in a subprocess, returned once it answers
    on http://127.0.0.1:PORT (https, verified against the certificate `ca`, when given) as (process, base
    url); the caller kills it."""
    import os
    import ssl
    import subprocess
    import sys
    import time

    import httpx

    port = port or free_port()
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-m", "cai.cli", "label-ui", "--data", str(data), "--port", str(port),
                             *args], cwd=repo, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url = f"{'https' if ca else 'http'}://127.0.0.1:{port}"
    verify = ssl.create_default_context(cafile=str(ca)) if ca else True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"label-ui exited {proc.returncode}: {proc.stdout.read()[-2000:]}")
        try:
            if httpx.get(url + "/api/config", timeout=2, verify=verify).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"label-ui did not answer on {url} within {timeout} s")
