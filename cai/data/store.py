"""Durable run state: an output directory's fingerprint, append-only record logs, and a request cache.

A run appends each finished record (a conversation, a labelled pair) as one JSON line to a shard of
its record log and fsyncs it, so `kill -9` loses at most the record being written; a torn last line is
ignored on load. Rerunning the same command reloads finished records and only does what is left.
The SQLite request cache is content-addressed (weights hash + rendered prompt + sampling params +
seed), so a rerun after editing one principle regenerates only what that principle touched.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cai.errors import InputError

STATE = ".cai"


def fingerprint(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


class RunDir:
    """An output directory bound to one run configuration. Reopening it with the same configuration
    resumes; a different configuration is an error unless `overwrite` (which keeps nothing)."""

    def __init__(self, out: str | Path, config: dict[str, Any], *, overwrite: bool = False):
        self.out = Path(out)
        self.state = self.out / STATE
        self.config = config
        self.fp = fingerprint(config)
        run_file = self.state / "run.json"
        if self.out.exists() and any(self.out.iterdir()):
            if run_file.is_file():
                old = json.loads(run_file.read_text())
                if old.get("fingerprint") != self.fp and not overwrite:
                    changed = sorted(k for k in set(old.get("config", {})) | set(config)
                                     if old.get("config", {}).get(k) != config.get(k))
                    raise InputError(f"output directory holds a run with a different configuration "
                                     f"(changed: {', '.join(changed) or '?'}); pass --overwrite to replace it",
                                     file=self.out, field="out")
            elif not overwrite:
                raise InputError("output directory is not empty and was not written by this command; "
                                 "pass --overwrite to replace it", file=self.out, field="out")
            if overwrite and (not run_file.is_file() or json.loads(run_file.read_text()).get("fingerprint") != self.fp):
                shutil.rmtree(self.out)
        self.state.mkdir(parents=True, exist_ok=True)
        if not run_file.is_file():
            tmp = run_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({"fingerprint": self.fp, "config": config}, indent=2, default=str))
            os.replace(tmp, run_file)

    def log(self, name: str) -> "RecordLog":
        return RecordLog(self.state / "records" / name)


class RecordLog:
    """Append-only JSONL shards of finished records, keyed by `record[key]` (the last write wins)."""

    def __init__(self, folder: Path, key: str = "key"):
        self.folder, self.key = Path(folder), key
        self.folder.mkdir(parents=True, exist_ok=True)
        self._fh = None

    def load(self) -> dict[str, dict[str, Any]]:
        records: dict[str, dict[str, Any]] = {}
        for shard in sorted(self.folder.glob("shard-*.jsonl")):
            with open(shard, encoding="utf-8") as f:
                for line in f:
                    if not line.endswith("\n"):
                        break  # torn write from a killed process: the record was never acknowledged
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        break
                    records[rec[self.key]] = rec
        return records

    def _open(self):
        n = len(list(self.folder.glob("shard-*.jsonl")))
        self._fh = open(self.folder / f"shard-{n:05d}.jsonl", "a", encoding="utf-8")

    def append(self, record: dict[str, Any]) -> None:
        if self._fh is None:
            self._open()
        self._fh.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh:
            self._fh.close()
            self._fh = None


class RequestCache:
    """Content-addressed SQLite cache of engine results (JSON), safe across processes (WAL)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), timeout=60, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self._db.commit()

    def get(self, key: str) -> Any | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM results WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO results (key, value) VALUES (?, ?)",
                             (key, json.dumps(value, ensure_ascii=False)))
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    def close(self) -> None:
        self._db.close()


def default_cache_path() -> Path:
    from cai.models import cache_dir
    return Path(os.environ.get("CAI_REQUEST_CACHE", cache_dir() / "requests.sqlite"))


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)
