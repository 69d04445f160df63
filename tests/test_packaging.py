"""cai installs as a package: build the wheel (offline, no build isolation), install it into a fresh venv
with no network (its dependencies come from this environment's site-packages, added by a .pth line, so
nothing is downloaded and cai itself can only come from the wheel), then run `cai constitution lint
harmless`, `python -m cai` and `cai critique --dry-run` from another directory. Constitutions, prompt
templates and the shipped prompts must come from inside the wheel."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_installs_and_runs_from_another_directory(tmp_path, tiny_model):
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    # 1. the wheel, with the shipped folders inside the package (built from a copy: setuptools writes build/
    #    and *.egg-info next to the sources, and tests write only under tmp)
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE", "cai", "constitutions", "prompts", "data"):
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy2
        copy(REPO / name, src / name, **({"ignore": shutil.ignore_patterns("__pycache__")} if copy is shutil.copytree
                                        else {}))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
                        str(tmp_path / "dist"), str(src)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    [whl] = (tmp_path / "dist").glob("cai-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    for f in ("cai/_shipped/constitutions/harmless.yaml", "cai/_shipped/prompts/critique.j2",
              "cai/_shipped/data/red_team.jsonl", "cai/__main__.py"):
        assert f in names, f

    # 2. a fresh venv: cai from the wheel only; dependencies visible through a .pth line (no download)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", str(whl)],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-3000:]

    # 3. run it from another directory, with nothing of the source tree on the path
    work = tmp_path / "elsewhere"
    work.mkdir()
    run_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def run(*cmd):
        return subprocess.run([*cmd], capture_output=True, text=True, cwd=work, env=run_env, timeout=600)

    where = run(str(py), "-c", "import cai, cai.constitution.templates as t; print(cai.__file__); print(t.PROMPTS_DIR)")
    assert where.returncode == 0, where.stderr[-2000:]
    pkg, prompts = where.stdout.split()
    assert pkg.startswith(str(site)) and prompts == str(site / "cai" / "_shipped" / "prompts")
    lint = run(str(venv / "bin" / "cai"), "constitution", "lint", "harmless")
    assert lint.returncode == 0, lint.stderr[-2000:]
    assert run(str(py), "-m", "cai", "constitution", "lint", "harmless").stdout == lint.stdout
    # an installed cai writes a new constitution where the user is, never into the package's own copies
    new = run(str(venv / "bin" / "cai"), "constitution", "new", "mine")
    assert new.returncode == 0, new.stderr[-2000:]
    assert (work / "mine.yaml").is_file() and not (site / "cai" / "_shipped" / "constitutions" / "mine.yaml").exists()
    assert new.stdout.splitlines()[-1] == "next: edit it, then `cai run configs/quickstart.yaml vars.constitution=mine.yaml`"
    dry = run(str(venv / "bin" / "cai"), "critique", "--dry-run", "--model", str(tiny_model), "--limit", "3",
              "--out", str(work / "out"), "--cache", str(work / "c.sqlite"))
    assert dry.returncode == 0, dry.stderr[-2000:]
    plan = json.loads(dry.stdout.splitlines()[-1])
    assert plan["conversations"] == 3 and plan["regenerate"] == 3  # the shipped red-team prompts, nothing cached
