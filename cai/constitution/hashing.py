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


def template_digests(c) -> dict[str, str]:
    """sha256 of each prompt template the constitution renders with (overrides or `prompts/`).

    The text, not the path, is hashed: editing `prompts/compare.j2` changes every prompt.
    """
    from cai.templates import sources
    return {name: hashlib.sha256(text.encode("utf-8")).hexdigest() for name, (_, text) in sources(c).items()}
