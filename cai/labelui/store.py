"""Human labels in SQLite: append-only, WAL mode, each label committed before the server answers.

`synchronous=FULL` makes every commit durable when it returns (WAL fsync), so a label the page saw
acknowledged survives `kill -9` of the server and a power cut. Labels are never updated in place: a
changed answer is a new row, and the latest row of (pair, annotator) is the current label, so the table
is also the audit log of who answered what and when.
"""
from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cai.errors import InputError

CHOICES = ("a", "b", "tie", "skip")

SCHEMA = """
CREATE TABLE IF NOT EXISTS labels (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pair_id TEXT NOT NULL,
    pair_hash TEXT NOT NULL,
    annotator TEXT NOT NULL,
    choice TEXT NOT NULL CHECK (choice IN ('a', 'b', 'tie', 'skip')),
    shown_left TEXT NOT NULL CHECK (shown_left IN ('a', 'b')),
    note TEXT NOT NULL DEFAULT '',
    seconds REAL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS labels_by_annotator ON labels (annotator, pair_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Label:
    """The current answer of one annotator on one pair. `choice` is canonical ("a"/"b", not left/right)."""

    pair_id: str
    pair_hash: str
    annotator: str
    choice: str
    shown_left: str
    note: str
    seconds: float | None
    created_at: float


def default_db(data: str | Path) -> Path:
    """Labels live next to the data they label, in a file no cai stage writes or removes."""
    return Path(data) / "human_labels.sqlite"


class LabelStore:
    """One SQLite connection shared by the server's worker threads (serialised by a lock)."""

    def __init__(self, path: str | Path, *, readonly: bool = False):
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            if readonly:
                self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
            self._db.commit()
        except (sqlite3.Error, OSError) as e:  # another file, a directory, an unwritable place: the user's to fix
            raise InputError(f"cannot use it as the label store ({type(e).__name__}: {e})", file=self.path,
                             field="--db") from None

    def add(self, *, pair_id: str, pair_hash: str, annotator: str, choice: str, shown_left: str,
            note: str = "", seconds: float | None = None) -> int:
        """Append one label and commit it; returns its row id. Raises ValueError on an invalid choice
        (the CHECK constraints are the last line; the server validates before calling)."""
        if choice not in CHOICES or shown_left not in ("a", "b"):
            raise ValueError(f"invalid choice {choice!r} / shown_left {shown_left!r}")
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO labels (pair_id, pair_hash, annotator, choice, shown_left, note, seconds, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (pair_id, pair_hash, annotator, choice, shown_left, note, seconds, time.time()))
            self._db.commit()
            return int(cur.lastrowid)

    def current(self, annotator: str | None = None) -> list[Label]:
        """The latest label of every (pair, annotator), optionally of one annotator, oldest first."""
        sql = ("SELECT pair_id, pair_hash, annotator, choice, shown_left, note, seconds, created_at FROM labels "
               "WHERE id IN (SELECT MAX(id) FROM labels GROUP BY pair_id, annotator)")
        args: tuple = ()
        if annotator is not None:
            sql += " AND annotator = ?"
            args = (annotator,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY id", args).fetchall()
        return [Label(*r) for r in rows]

    def count(self) -> int:
        """Rows in the append-only table (every answer ever given, including changed ones)."""
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM labels").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def read_labels(path: str | Path) -> list[Label]:
    """Current labels of a store file, read-only (a missing file has none)."""
    p = Path(path)
    if not p.is_file():
        return []
    store = LabelStore(p, readonly=True)
    try:
        return store.current()
    except sqlite3.Error as e:  # a file that is not a label store
        raise InputError(f"not a label store ({type(e).__name__}: {e})", file=p, field="--db") from None
    finally:
        store.close()
