"""cai.data.layout: replacing a table's Parquet shards is one step. A kill -9 before any file-system mutation
of `write_dataset` (tests/helpers/kill_before_mutation.py, counted, not timed) leaves readers the old rows
or the new rows, never both generations of shards; the next write finishes cleanly; the user's files in a
config folder survive."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cai.data import layout
from cai.data.layout import read_config, write_dataset

REPO = Path(__file__).resolve().parents[1]
OLD = [{"id": f"old{i}", "text": "before"} for i in range(3)]  # one shard: train-00000-of-00001
NEW = [{"id": f"new{i}", "text": "after"} for i in range(5)]  # two rows a shard: train-0000{0,1,2}-of-00003


def _old_dataset(out: Path) -> None:
    exec(SETUP, {"out": str(out)})  # with the user's file inside a config folder


SETUP = """
from cai.data.layout import write_dataset
write_dataset(out, {"prefs": %r, "pairs": [{"id": "p"}]}, {"rows": 3}, title="old")
open(out + "/prefs/notes.txt", "w").write("mine")
""" % OLD
ACTION = """
from cai.data import layout
layout.ROWS_PER_SHARD = 2
layout.write_dataset(out, {"prefs": %r}, {"rows": 5}, title="new")
""" % NEW


def kill_at_every_mutation(root: Path, setup: str, action: str) -> list[str]:
    """tests/helpers/kill_before_mutation.py: ROOT/k1, k2, ... killed before mutation 1, 2, ..."""
    r = subprocess.run([sys.executable, str(REPO / "tests/helpers/kill_before_mutation.py"), str(root), setup,
                        action], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _shards(out: Path) -> list[str]:
    """What a reader of the Hub layout globs (`prefs/train-*.parquet`)."""
    return sorted(p.name for p in (out / "prefs").glob("train-*.parquet"))


def test_kill9_at_every_step_of_a_shard_swap_leaves_old_or_new_rows(tmp_path):
    fates = kill_at_every_mutation(tmp_path, SETUP, ACTION)
    assert fates[-1] == "finished" and set(fates[:-1]) == {"killed"} and len(fates) > 5, fates
    seen = set()
    for k in range(1, len(fates) + 1):
        out = tmp_path / f"k{k}"
        shards = _shards(out)
        # one generation of shards only: all "-of-N" agree and N files are there
        total = {s.split("-of-")[1] for s in shards}
        assert len(total) == 1 and len(shards) == int(total.pop().split(".")[0]), (k, shards)
        rows = read_config(out, "prefs")
        assert rows in (OLD, NEW), (k, rows)
        seen.add("new" if rows == NEW else "old")
        assert (out / "prefs" / "notes.txt").read_text() == "mine", k
        assert read_config(out, "pairs") == [{"id": "p"}]  # the table not being written is untouched
        # the next write (a rerun) ends with the new table and nothing left behind
        layout.ROWS_PER_SHARD, old = 2, layout.ROWS_PER_SHARD
        try:
            write_dataset(out, {"prefs": NEW}, {"rows": 5}, title="new")
        finally:
            layout.ROWS_PER_SHARD = old
        assert read_config(out, "prefs") == NEW and len(_shards(out)) == 3
        assert not (out / ".cai").exists() and (out / "prefs" / "notes.txt").read_text() == "mine"
    assert seen == {"old", "new"}  # the kills landed on both sides of the swap


def test_shard_swap_without_an_atomic_exchange_never_duplicates_rows(tmp_path, monkeypatch):
    """Where renameat2(RENAME_EXCHANGE) is missing the old folder is renamed away first."""
    out = tmp_path / "o"
    _old_dataset(out)
    monkeypatch.setattr(layout, "_exchange", lambda a, b: False)
    monkeypatch.setattr(layout, "ROWS_PER_SHARD", 2)
    write_dataset(out, {"prefs": NEW}, {"rows": 5}, title="new")
    assert read_config(out, "prefs") == NEW and _shards(out) == [f"train-0000{i}-of-00003.parquet" for i in range(3)]
    assert (out / "prefs" / "notes.txt").read_text() == "mine" and not (out / ".cai").exists()
    # a kill between its two renames leaves the table missing (never doubled); the next write restores it
    (out / ".cai" / "swap").mkdir(parents=True)
    (out / "prefs").rename(out / ".cai" / "swap" / "prefs.old")
    assert not (out / "prefs").exists()
    write_dataset(out, {"prefs": OLD}, {"rows": 3}, title="old")
    assert read_config(out, "prefs") == OLD and (out / "prefs" / "notes.txt").read_text() == "mine"


def test_the_card_and_the_hub_loader_see_one_generation(tmp_path):
    out = tmp_path / "o"
    _old_dataset(out)
    write_dataset(out, {"prefs": NEW}, {"rows": 5}, title="new")
    head = (out / "README.md").read_text().split("---")[1]
    assert "config_name: pairs" in head and "config_name: prefs" in head and ".cai" not in head
    assert [r for f in sorted((out / "prefs").glob("train-*.parquet")) for r in pq.read_table(f).to_pylist()] == NEW
    assert json.loads((out / "manifest.json").read_text()) == {"rows": 5}


@pytest.mark.parametrize("bad", [[{"a": 1}, {"a": "x"}]])
def test_a_table_that_cannot_be_written_leaves_the_old_one(tmp_path, bad):
    from cai.errors import InputError
    out = tmp_path / "o"
    _old_dataset(out)
    with pytest.raises(InputError, match="cannot write table 'prefs'"):
        layout.write_config(out, "prefs", bad)
    assert read_config(out, "prefs") == OLD and not (out / ".cai").exists()
