"""Where cai's shipped files live: constitutions, prompt templates and prompt data.

In a source checkout they are the top-level folders `constitutions/`, `prompts/` and `data/` (the place to
edit them). A wheel carries copies inside the package, under `cai/_shipped/` (see setup.py), because the
top-level folders do not exist next to an installed package.
"""
from __future__ import annotations

from pathlib import Path

SHIPPED = ("constitutions", "prompts", "data")
_PKG = Path(__file__).resolve().parent


def shipped_dir(name: str) -> Path:
    """The folder `name` (one of SHIPPED): inside the installed package when it is there, else next to it."""
    inside = _PKG / "_shipped" / name
    return inside if inside.is_dir() else _PKG.parent / name


def is_shipped_copy(path: Path) -> bool:
    """Whether `path` lies in the package's own copies (an installed cai): not a place to write user files."""
    return (_PKG / "_shipped") in Path(path).resolve().parents
