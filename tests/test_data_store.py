"""cai.data.store: `--overwrite` can be killed at any moment and finished by a rerun (the run marker
`.cai/run.json` goes last), and a worker process of an earlier run that still holds the worker lock keeps
a rerun out. Kills land before each file-system mutation in turn (tests/helpers/kill_before_mutation.py),
so every state a kill can leave is visited, on any machine."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cai.data import store
from cai.data.store import RunDir, check_output_dir
from cai.errors import InputError

REPO = Path(__file__).resolve().parents[1]

SETUP = """
import os
from cai.data.layout import write_dataset
from cai.data.store import RunDir
run = RunDir(out, {"x": 1})
log = run.log("responses")
for i in range(3):
    log.append({"key": f"r{i}", "text": "old"})
log.close()
write_dataset(out, {"responses": [{"id": "a"}], "pairs": [{"id": "b"}]}, {"rows": 1}, title="old")
run.release()
open(os.path.join(out, "notes.md"), "w").write("mine")  # the user's own files in a cai output directory
os.mkdir(os.path.join(out, "figures"))
open(os.path.join(out, "figures", "plot.png"), "w").write("png")
"""
ACTION = """
from cai.data.store import RunDir
RunDir(out, {"x": 2}, overwrite=True).release()
"""


def _user_files_intact(out: Path) -> bool:
    return (out / "notes.md").read_text() == "mine" and (out / "figures" / "plot.png").read_text() == "png"


def test_kill9_at_every_step_of_overwrite_leaves_a_directory_a_rerun_finishes(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "tests/helpers/kill_before_mutation.py"), str(tmp_path), SETUP,
                        ACTION], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    fates = json.loads(r.stdout.strip().splitlines()[-1])
    assert fates[-1] == "finished" and set(fates[:-1]) == {"killed"} and len(fates) > 5, fates
    for k in range(1, len(fates) + 1):
        out = tmp_path / f"k{k}"
        assert _user_files_intact(out), k
        check_output_dir(out)  # still a cai directory: never "not written by cai" for ever
        marker = json.loads((out / ".cai" / "run.json").read_text())
        assert marker["config"] in ({"x": 1}, {"x": 2}), k  # the old marker until the new one replaces it
        RunDir(out, {"x": 2}, overwrite=True).release()  # the rerun
        assert json.loads((out / ".cai" / "run.json").read_text())["config"] == {"x": 2}
        assert sorted(p.name for p in out.iterdir()) == [".cai", "figures", "notes.md"], k
        assert sorted(p.name for p in (out / ".cai").iterdir()) == ["lock", "run.json"], k
        assert _user_files_intact(out)


def test_a_live_worker_of_an_earlier_run_keeps_a_rerun_out(tmp_path, monkeypatch):
    """An orphaned worker (here: a process holding `.cai/worker.lock` as `tie_worker_to_parent` does) is
    waited for, then refused with one line naming its pid; once it is gone the directory opens at once."""
    out = tmp_path / "o"
    RunDir(out, {"x": 1}).release()
    holder = subprocess.Popen([sys.executable, "-c", "import os, sys, time; sys.path.insert(0, sys.argv[1]);"
                               "from cai.data.store import tie_worker_to_parent;"
                               "tie_worker_to_parent(os.getppid(), sys.argv[2]); print('locked', flush=True);"
                               "time.sleep(60)", str(REPO), str(out / ".cai")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        monkeypatch.setattr(store, "WORKER_EXIT_WAIT_S", 0.5)
        t0 = time.perf_counter()
        with pytest.raises(InputError, match=rf"a worker process \(pid {holder.pid}\) of an earlier run still "
                                             "writes this output directory"):
            RunDir(out, {"x": 1})
        assert 0.5 <= time.perf_counter() - t0 < 5
    finally:
        holder.kill()
        holder.wait()
    RunDir(out, {"x": 1}).release()  # the lock went with the process; the run's own lock was released too
    RunDir(out, {"x": 1}).release()
