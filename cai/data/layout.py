"""The one dataset layout every cai stage writes: the Hub's layout for a dataset with several subsets.

    DIR/<config>/train-00000-of-00001.parquet   one folder per table ("config")
    DIR/README.md                               dataset card; its YAML header declares `configs:`
    DIR/manifest.json                           provenance, counts and statistics of the run

so that `datasets.load_dataset(DIR, "<config>")` reads each table with no conversion.
Files are written to a temporary name and renamed, so a crash never leaves a torn Parquet file, and a
table's shards are replaced all at once (`write_config`).
"""
from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from cai.data.store import STATE, fsync_dir, write_durable
from cai.errors import InputError

ROWS_PER_SHARD = 100_000


def _atomic_write(path: Path, data: bytes | str) -> None:
    write_durable(path, data)


def write_config(out: str | Path, config: str, rows: list[dict[str, Any]]) -> list[Path]:
    """Write one table as Parquet shards under DIR/<config>/, replacing the previous shards in one step.

    The shards are written into `DIR/.cai/swap/<config>/` (out of reach of the `<config>/train-*.parquet`
    pattern readers glob) and that folder is exchanged with `DIR/<config>/` by one atomic rename
    (`renameat2(RENAME_EXCHANGE)`), so a reader, or a kill at any moment, sees either every old shard or
    every new one: never `-of-00001` beside `-of-00002`. Files in the old folder that are not shards are
    hard-linked into the new one before the exchange (other entries are moved after it). Where the exchange
    is unavailable (not Linux, or a file system without it), the old folder is renamed away first: a kill
    between the two renames leaves the table missing until the next write, never duplicated."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out)
    folder, swap = out / config, out / STATE / "swap"
    new = swap / config
    _recover(folder, swap, config)
    new.mkdir(parents=True)
    n = max(1, -(-len(rows) // ROWS_PER_SHARD))
    names = []
    for i in range(n):
        chunk = rows[i * ROWS_PER_SHARD:(i + 1) * ROWS_PER_SHARD]
        try:
            table = pa.Table.from_pylist(chunk) if chunk else pa.table({})
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:  # mixed types that slipped past the input checks
            shutil.rmtree(new)
            _remove_if_empty(swap)
            raise InputError(f"cannot write table {config!r}: {e}", file=folder) from None
        path = new / f"train-{i:05d}-of-{n:05d}.parquet"
        pq.write_table(table, path)
        with open(path, "rb") as f:  # the data must be on disk before the rename makes it visible
            os.fsync(f.fileno())
        names.append(path.name)
    if folder.is_dir():  # the user's files appear in both folders, so no kill can hide them
        for e in folder.iterdir():
            if not _is_shard(e) and e.is_file() and not e.is_symlink():
                os.link(e, new / e.name)
    fsync_dir(new)
    if not folder.exists():
        os.rename(new, folder)
    elif _exchange(new, folder):  # `new` now holds the old shards
        _keep_user_files(new, folder)
        shutil.rmtree(new)
    else:
        old = swap / f"{config}.old"
        os.rename(folder, old)
        os.rename(new, folder)
        _keep_user_files(old, folder)
        shutil.rmtree(old)
    fsync_dir(out)
    _remove_if_empty(swap)
    return [folder / name for name in names]


def _is_shard(p: Path) -> bool:
    return p.is_file() and p.suffix == ".parquet" and p.name.startswith(("train-", ".train-"))


def _keep_user_files(old: Path, folder: Path) -> None:
    """Move what the user put in a config folder (anything but shards) from the replaced folder into the new
    one, where it is not there already (as a hard link)."""
    for e in old.iterdir():
        if not _is_shard(e) and not (folder / e.name).exists():
            os.rename(e, folder / e.name)


def _recover(folder: Path, swap: Path, config: str) -> None:
    """Clear what a killed write of `config` left in the swap folder: its shards are dropped (the table in
    `folder` is whole: the old one, the new one, or, after the fallback's first rename, missing and about to
    be written), the user's files go back into `folder`."""
    for left in (swap / config, swap / f"{config}.old"):
        if left.is_dir():
            if any(not _is_shard(e) for e in left.iterdir()):
                folder.mkdir(exist_ok=True)
                _keep_user_files(left, folder)
            shutil.rmtree(left)


def _remove_if_empty(swap: Path) -> None:
    for d in (swap, swap.parent):  # .cai/swap, then .cai when this write made it
        try:
            d.rmdir()
        except OSError:  # not empty (a run's state, another table being written)
            return


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two directories (Linux renameat2 with RENAME_EXCHANGE). False where unsupported."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def write_card(out: str | Path, configs: list[str], *, title: str, body: str = "",
               manifest: dict[str, Any] | None = None) -> None:
    header = {"configs": [{"config_name": c, "data_files": [{"split": "train", "path": f"{c}/train-*.parquet"}]}
                          for c in configs],
              "tags": ["cai", "constitutional-ai"]}
    text = "---\n" + yaml.safe_dump(header, sort_keys=False) + "---\n\n" + f"# {title}\n\n" + body
    if manifest:
        text += "\n\n## Manifest\n\n```json\n" + json.dumps(manifest, indent=2, default=str)[:20000] + "\n```\n"
    _atomic_write(Path(out) / "README.md", text)


def write_manifest(out: str | Path, manifest: dict[str, Any]) -> None:
    _atomic_write(Path(out) / "manifest.json", json.dumps(manifest, indent=2, default=str))


def write_dataset(out: str | Path, tables: dict[str, list[dict[str, Any]]], manifest: dict[str, Any], *,
                  title: str, body: str = "") -> None:
    """Write every table, then the manifest, then the card (the card last: it declares the configs)."""
    for name, rows in tables.items():
        write_config(out, name, rows)
    write_manifest(out, manifest)
    existing = sorted({p.parent.name for p in Path(out).glob("*/train-*.parquet")})
    write_card(out, existing, title=title, body=body, manifest=manifest)


def read_config(path: str | Path, config: str | None = None) -> list[dict[str, Any]]:
    """Rows of one config of a dataset directory (the only config when `config` is None)."""
    import pyarrow.parquet as pq

    path = Path(path)
    configs = sorted({p.parent.name for p in path.glob("*/train-*.parquet")})
    if not configs:
        files = sorted(path.glob("*.parquet"))
        if files:
            return [r for f in files for r in pq.read_table(f).to_pylist()]
        raise InputError("not a dataset directory (no <config>/train-*.parquet files)", file=path)
    if config is None:
        if len(configs) > 1:
            raise InputError(f"dataset has several configs ({', '.join(configs)}); name one", file=path,
                             field="config")
        config = configs[0]
    if config not in configs:
        raise InputError(f"no config {config!r} (have: {', '.join(configs)})", file=path, field="config")
    return [r for f in sorted((path / config).glob("train-*.parquet")) for r in pq.read_table(f).to_pylist()]


def read_manifest(path: str | Path) -> dict[str, Any]:
    p = Path(path) / "manifest.json"
    return json.loads(p.read_text()) if p.is_file() else {}
