"""`cai report RUN_DIR` on directories that are not pipeline runs: one line naming it, exit 2, nothing written."""
from __future__ import annotations

from conftest import run_cai


def test_not_a_run_directory_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("mine\n")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "pipeline.json").write_text("{not json")
    (tmp_path / "nostages").mkdir()
    (tmp_path / "nostages" / "pipeline.json").write_text('{"stages": {}}')
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "report.md").write_text("my notes\n")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    for name in ("afile", "bad", "nostages", "mine", "missing"):
        r = run_cai("report", str(tmp_path / name))
        assert r.returncode == 2, (name, r.returncode, r.stderr[-2000:])
        assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"cai: error: {tmp_path / name}: not a pipeline "
                                                                 "run directory"), r.stderr
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
