"""The one dataset layout every cai stage writes: the Hub's layout for a dataset with several subsets.

    DIR/<config>/train-00000-of-00001.parquet   one folder per table ("config")
    DIR/README.md                               dataset card; its YAML header declares `configs:`
    DIR/manifest.json                           provenance, counts and statistics of the run

so that `datasets.load_dataset(DIR, "<config>")` reads each table with no conversion.
Files are written to a temporary name and renamed, so a crash never leaves a torn Parquet file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from cai.data.store import fsync_dir, write_durable
from cai.errors import InputError

ROWS_PER_SHARD = 100_000


def _atomic_write(path: Path, data: bytes | str) -> None:
    write_durable(path, data)


def write_config(out: str | Path, config: str, rows: list[dict[str, Any]]) -> list[Path]:
    """Write one table as Parquet shards under DIR/<config>/ (replacing previous shards)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(out) / config
    folder.mkdir(parents=True, exist_ok=True)
    n = max(1, -(-len(rows) // ROWS_PER_SHARD))
    paths = []
    for i in range(n):
        chunk = rows[i * ROWS_PER_SHARD:(i + 1) * ROWS_PER_SHARD]
        try:
            table = pa.Table.from_pylist(chunk) if chunk else pa.table({})
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:  # mixed types that slipped past the input checks
            raise InputError(f"cannot write table {config!r}: {e}", file=folder) from None
        path = folder / f"train-{i:05d}-of-{n:05d}.parquet"
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        pq.write_table(table, tmp)
        with open(tmp, "rb") as f:  # the data must be on disk before the rename makes it visible
            os.fsync(f.fileno())
        os.replace(tmp, path)
        paths.append(path)
    fsync_dir(folder)
    for stale in folder.glob("train-*.parquet"):
        if stale not in paths:
            stale.unlink()
    return paths


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
