"""Errors that reach the user: one line, naming file, line and field, with a fixed exit code.

`InputError` (exit 2) is for anything a user wrote: YAML, data files, configs, CLI flags.
`PartialRunError` (exit 3) ends a run that finished but recorded failed rows.
Anything else that escapes is an internal error (exit 1).
"""
from __future__ import annotations

from pathlib import Path


class CaiError(Exception):
    exit_code = 1


class InputError(CaiError):
    """A mistake in user input. Renders as `FILE:LINE:COL: field.path: message`."""

    exit_code = 2

    def __init__(self, message: str, *, file: str | Path | None = None, line: int | None = None,
                 col: int | None = None, field: str | None = None):
        self.message, self.file, self.line, self.col, self.field = message, file, line, col, field
        super().__init__(str(self))

    def __str__(self) -> str:
        loc = ""
        if self.file is not None:
            loc = str(self.file)
            if self.line is not None:
                loc += f":{self.line}"
                if self.col is not None:
                    loc += f":{self.col}"
            loc += ": "
        fld = f"{self.field}: " if self.field else ""
        return f"{loc}{fld}{self.message}".replace("\n", " ")


class PartialRunError(CaiError):
    """The run completed, but some rows failed; they are recorded, never silently dropped."""

    exit_code = 3
