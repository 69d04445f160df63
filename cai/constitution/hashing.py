"""Content hashes of principles and constitutions.

The hash is sha256 of canonical JSON (sorted keys, no whitespace, UTF-8), computed on parsed values,
so reformatting or reordering keys in the YAML changes nothing. Later stages key provenance and
caches on these hashes.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()

