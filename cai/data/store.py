"""Durable run state: an output directory's fingerprint, append-only record logs, and a request cache.

A run appends each finished record (a conversation, a labelled pair) as one JSON line to a shard of
its record log and fsyncs it, so `kill -9` loses at most the record being written; a torn last line is
ignored on load. Rerunning the same command reloads finished records and only does what is left.
The SQLite request cache is content-addressed (weights hash + rendered prompt + sampling params +
seed), so a rerun after editing one principle regenerates only what that principle touched.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cai.errors import InputError
from cai.models import cache_dir

STATE = ".cai"
_RECORD_DELAY = float(os.environ.get("CAI_RECORD_DELAY", "0") or 0)
# How long a new run waits for a judge worker of a killed run to die (it dies with its parent within about
# a second: a parent-death signal and a watchdog) before it refuses the directory.
WORKER_EXIT_WAIT_S = 10.0


def pause_point(name: str) -> None:
    """A named point where a kill -9 test can stop a process deterministically, not by timing:
    `CAI_PAUSE_AT=name` sleeps there for good, so that a test can kill this process or its parent while it
    waits. Unset, it costs one environment lookup."""
    if os.environ.get("CAI_PAUSE_AT") == name:
        while True:
            time.sleep(3600)


def fingerprint(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fsync_dir(path: Path) -> None:
    """fsync a directory, so a rename inside it survives a power loss (POSIX: the entry lives in the dir)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durable(path: Path, data: bytes | str) -> None:
    """Write `path` atomically and durably: a temp file, fsync, rename, fsync of the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


# What cai writes into an output directory; `--overwrite` removes these and nothing else.
_CAI_FILES = ("README.md", "manifest.json")


def _cai_written_entries(out: Path) -> list[Path]:
    """Entries of `out` that cai wrote: its state (minus the locks), card, manifest and config folders
    holding nothing but Parquet shards (and their temp files)."""
    keep: list[Path] = []
    for e in out.iterdir():
        if e.name == STATE:
            keep += [x for x in e.iterdir() if x.name not in ("lock", WORKER_LOCK)]
        elif e.is_file() and e.name in _CAI_FILES:
            keep.append(e)
        elif e.is_dir() and not e.is_symlink() and any(e.iterdir()) and all(
                f.is_file() and (f.name.startswith("train-") or f.name.startswith(".train-")) and ".parquet" in f.name
                for f in e.iterdir()):
            keep.append(e)
    return keep


def check_output_dir(out: str | Path, inputs: list | tuple = ()) -> None:
    """Refuse an output directory cai may not write (README, "Safety of your data"): a file, a non-empty
    directory cai did not write, the working directory or one above it, an input, or a path inside or
    around an input. Cheap: stages call it before they open an engine."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError("output path exists and is not a directory", file=out, field="--out")
    real = out.resolve()
    for i in (Path(str(x)) for x in inputs if x is not None):
        if not i.exists():
            continue
        ir = i.resolve()
        if _inside(real, ir):
            raise InputError(f"output directory is, or lies inside, the input {str(i)!r}; choose another --out",
                             file=out, field="--out")
        if _inside(ir, real):
            raise InputError(f"output directory contains the input {str(i)!r}; choose another --out",
                             file=out, field="--out")
    if _inside(Path.cwd().resolve(), real):
        raise InputError("output directory is the working directory or contains it; choose another --out",
                         file=out, field="--out")
    state = out / STATE
    if out.is_dir() and any(out.iterdir()) and not (state / "run.json").is_file():
        only_lock = ([e.name for e in out.iterdir()] == [STATE]
                     and {x.name for x in state.iterdir()} <= {"lock", WORKER_LOCK})
        if not only_lock:
            raise InputError("output directory is not empty and was not written by cai (no .cai/run.json); "
                             "cai never deletes files it did not write: choose another --out or empty it",
                             file=out, field="--out")


class RunDir:
    """An output directory bound to one run configuration.

    Safety rules (README, "Safety of your data"):
    - `out` must be a directory cai wrote (it holds `.cai/run.json`), an empty directory or a new path;
      anything else (a file, a directory with other files) is refused, with or without `overwrite`.
    - `out` may not be one of the `inputs`, lie inside one, contain one, or contain the working directory.
    - One process at a time: an exclusive lock on `.cai/lock` is held for the object's lifetime; a second
      writer fails at once.
    - Reopening with the same configuration resumes; a different one is refused unless `overwrite`, which
      removes only what cai wrote there (`.cai/`, README.md, manifest.json, `<config>/train-*.parquet`).

    `RunDir(out, inputs=..., overwrite=...)` runs the checks and takes the lock (call it before opening
    an engine); `start(config)` binds the configuration. Passing `config` does both at once."""

    def __init__(self, out: str | Path, config: dict[str, Any] | None = None, *, overwrite: bool = False,
                 inputs: tuple | list = ()):
        self.out = Path(out)
        self.state = self.out / STATE
        self.overwrite = overwrite
        self.config: dict[str, Any] | None = None
        self.fp: str | None = None
        self._lock_fh = None
        self._preflight([Path(str(i)) for i in inputs if i is not None])
        self._lock()
        if config is not None:
            self.start(config)

    # ---- checks before anything expensive ---------------------------------------------------------
    def _preflight(self, inputs: list[Path]) -> None:
        check_output_dir(self.out, inputs)

    def _lock(self) -> None:
        import fcntl
        self.state.mkdir(parents=True, exist_ok=True)
        fh = open(self.state / "lock", "a+")  # noqa: SIM115 - held for the run, released when the object dies
        try:
            # POSIX record lock: owned by the process, so another process is refused while a rerun in this
            # process (tests, notebooks) is not; the kernel drops it when the process dies, even by kill -9.
            fcntl.lockf(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            fh.close()
            raise InputError(f"another cai process (pid {holder}) is writing this output directory; wait for it "
                             "or choose another --out", file=self.out, field="--out") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._lock_fh = fh
        try:
            _wait_for_worker(self.state, self.out)
        except InputError:
            self.release()
            raise

    def release(self) -> None:
        if self._lock_fh is not None:
            self._lock_fh.close()
            self._lock_fh = None

    # ---- the configuration ------------------------------------------------------------------------
    def start(self, config: dict[str, Any]) -> "RunDir":
        self.config, self.fp = config, fingerprint(config)
        run_file = self.state / "run.json"
        if run_file.is_file():
            old = json.loads(run_file.read_text())
            if old.get("fingerprint") != self.fp:
                if not self.overwrite:
                    new = json.loads(json.dumps(config, default=str))  # as stored: tuples are lists
                    changed = sorted(k for k in set(old.get("config", {})) | set(new)
                                     if old.get("config", {}).get(k) != new.get(k))
                    raise InputError(f"output directory holds a run with a different configuration "
                                     f"(changed: {', '.join(changed) or '?'}); pass --overwrite to replace it",
                                     file=self.out, field="out")
                # The marker last: a kill part-way leaves the old run.json, so the directory is still cai's and
                # a rerun with --overwrite finishes the job; the new marker then replaces it atomically. Entries
                # outside .cai/ are first renamed into .cai/trash/ (atomic), so none is ever left half-deleted
                # where it would no longer look like cai's (an emptied config folder).
                entries = _cai_written_entries(self.out)
                trash = self.state / "trash"
                for e in sorted(entries, key=lambda e: e.parent != self.state):  # .cai/ first: an old trash too
                    if e == run_file:
                        continue
                    if e.parent == self.state:
                        shutil.rmtree(e) if e.is_dir() else e.unlink()
                    else:
                        trash.mkdir(exist_ok=True)
                        os.rename(e, trash / e.name)
                if trash.exists():
                    shutil.rmtree(trash)
                fsync_dir(self.state)
                write_durable(run_file, json.dumps({"fingerprint": self.fp, "config": config}, indent=2, default=str))
        if not run_file.is_file():
            write_durable(run_file, json.dumps({"fingerprint": self.fp, "config": config}, indent=2, default=str))
        return self

    def log(self, name: str) -> "RecordLog":
        return RecordLog(self.state / "records" / name)


# ---- worker processes of a run ---------------------------------------------------------------------------
# A run that opens an engine in a child process (the judge of `cai rlaif`) ties the child to itself: the
# child dies with its parent (a parent-death signal, and a watchdog where there is none), and holds
# `.cai/worker.lock` while alive, so a rerun never writes the same records beside an orphan.
WORKER_LOCK = "worker.lock"
_worker_lock_fh = None


def _wait_for_worker(state: Path, out: Path) -> None:
    """Return once no worker process of an earlier run holds `state/worker.lock`; refuse after
    WORKER_EXIT_WAIT_S (a worker that outlives its parent that long was not started by this cai)."""
    import fcntl
    path = state / WORKER_LOCK
    if not path.is_file():
        return
    deadline = time.monotonic() + WORKER_EXIT_WAIT_S
    with open(path, "a+") as fh:
        while True:
            try:
                fcntl.lockf(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                if time.monotonic() < deadline:
                    time.sleep(0.1)
                    continue
                fh.seek(0)
                holder = fh.read().strip() or "?"
                raise InputError(f"a worker process (pid {holder}) of an earlier run still writes this output "
                                 "directory; wait for it to exit or kill it", file=out, field="--out") from None
            fcntl.lockf(fh, fcntl.LOCK_UN)
            return


def die_with_parent() -> None:
    """Linux: ask the kernel to SIGKILL this process the moment its parent dies (prctl PR_SET_PDEATHSIG);
    elsewhere nothing. Runs in the child (a `preexec_fn`, a pool initializer)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux
        pass


def tie_worker_to_parent(parent_pid: int, state: str | Path) -> None:
    """Run in a worker process as it starts (a `multiprocessing` initializer): die when `parent_pid` dies,
    and hold the run's worker lock for life.

    Linux: prctl(PR_SET_PDEATHSIG, SIGKILL), so the kernel kills this process the moment its parent dies.
    Everywhere: a watchdog thread that polls getppid() and kills this process once it no longer names the
    parent (an orphan is re-parented), which also covers a parent that died before the prctl call."""
    import fcntl
    global _worker_lock_fh
    die_with_parent()  # not Linux: the watchdog alone

    def watchdog():
        while os.getppid() == parent_pid:
            time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGKILL)

    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGKILL)
    threading.Thread(target=watchdog, name="cai-parent-watchdog", daemon=True).start()
    fh = open(Path(state) / WORKER_LOCK, "a+")  # noqa: SIM115 - held until the process dies
    fcntl.lockf(fh, fcntl.LOCK_EX)  # the parent checked it is free; the kernel drops it when we die
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
    _worker_lock_fh = fh


def content_digest(items: list) -> str:
    """A short sha256 of JSON-able content (ids and texts of prompts or pairs): resumes are keyed by what
    the inputs say, not by their path."""
    return hashlib.sha256(json.dumps(items, sort_keys=True, ensure_ascii=False, default=str).encode()
                          ).hexdigest()[:16]


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
        if _RECORD_DELAY:  # testing hook: slow a run down so a kill -9 test can land mid-run
            time.sleep(_RECORD_DELAY)

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
    return Path(os.environ.get("CAI_REQUEST_CACHE", cache_dir() / "requests.sqlite"))


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)
