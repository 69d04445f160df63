"""Quiet by default: set-up, package metadata and `cai` itself print no deprecation banner or library
start-up warning unless `--verbose` is given, and the choice reaches the processes cai starts."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cai.cli import _leaf_parsers, build_parser

ROOT = Path(__file__).resolve().parents[1]
NOISE = ("deprecat", "futurewarning")


def noisy(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if any(n in ln.lower() for n in NOISE)]


def test_package_metadata_builds_without_deprecation_banner(tmp_path):
    """What `pip install -e .` runs first: setuptools reads pyproject.toml. A `license` table is deprecated
    (two banners); the SPDX string and license-files are current metadata (PEP 639)."""
    for f in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        shutil.copy(ROOT / f, tmp_path / f)
    (tmp_path / "cai").mkdir()
    (tmp_path / "cai" / "__init__.py").write_text("")
    (tmp_path / "meta").mkdir()
    r = subprocess.run([sys.executable, "-c", "import setuptools.build_meta as b; "
                        "print(b.prepare_metadata_for_build_wheel('meta'))"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert noisy(r.stdout + r.stderr) == []
    meta = (tmp_path / "meta" / r.stdout.strip().splitlines()[-1] / "METADATA").read_text()
    assert "License-Expression: Apache-2.0" in meta.splitlines() and "License-File: LICENSE" in meta.splitlines()


def test_every_command_takes_verbose():
    leaves = list(_leaf_parsers(build_parser()))
    assert len(leaves) > 15  # run, critique, train sft/rm/dpo/ppo/rloo, constitution lint/show/..., ...
    for p in leaves:
        assert "--verbose" in p._option_string_actions, p.prog


CHILD = ("import os, warnings, sys; from cai import quiet; quiet.configure({arg}); "
         "warnings.warn_explicit('x is deprecated', FutureWarning, 'f.py', 1, module='vllm.config'); "
         "print(os.environ.get('CAI_VERBOSE'), os.environ.get('TORCH_CPP_LOG_LEVEL'), file=sys.stdout)")


@pytest.mark.parametrize("arg, env, shown, levels", [
    ("None", {}, False, "0 ERROR"),
    ("True", {}, True, "1 None"),
    ("None", {"CAI_VERBOSE": "1"}, True, "1 None"),  # a stage process of `cai run --verbose`
])
def test_configure_hides_library_warnings_and_passes_the_choice_on(arg, env, shown, levels):
    base = {k: v for k, v in os.environ.items() if k not in ("CAI_VERBOSE", "TORCH_CPP_LOG_LEVEL", "PYTHONWARNINGS")}
    r = subprocess.run([sys.executable, "-c", CHILD.format(arg=arg)], env={**base, **env},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == levels.split()  # what the processes it starts inherit
    assert ("x is deprecated" in r.stderr) is shown


@pytest.mark.integration
def test_setup_and_plan_on_a_fresh_checkout_print_no_deprecation(tmp_path):
    """The README's first command as a new user runs it: set-up (the stamp path once installed), then
    `cai run --plan`, with an empty model cache so the default model is converted from its GGUF file."""
    env = {**os.environ, "CAI_CACHE": str(tmp_path / "cache")}
    env.pop("CAI_VERBOSE", None)
    setup = subprocess.run(["bash", "scripts/setup.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=1800)
    assert setup.returncode == 0, setup.stderr[-2000:]
    assert noisy(setup.stdout + setup.stderr) == []
    plan = subprocess.run([sys.executable, "-m", "cai", "run", "configs/quickstart.yaml",
                           f"run_dir={tmp_path / 'run'}", "--plan"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    assert plan.returncode == 0, plan.stderr[-2000:]
    assert noisy(plan.stdout + plan.stderr) == []
    assert [ln.split()[:3] for ln in plan.stdout.splitlines()] == [
        ["contrast", "contrast", "run"], ["sft", "train.sft", "run"], ["dpo", "train.dpo", "run"],
        ["eval", "eval.values", "run"]]
