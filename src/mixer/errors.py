"""Errors a user can act on: every user mistake becomes one of these, never a traceback."""

from __future__ import annotations

import errno
import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Diagnostic:
    """One problem located in a file, printed the way compilers do so editors can jump to it."""

    file: str
    line: int
    col: int
    message: str
    hint: str | None = None
    severity: str = "error"

    def format(self) -> str:
        text = f"{self.file}:{self.line}:{self.col}: {self.severity}: {self.message}"
        return f"{text}\n  hint: {self.hint}" if self.hint else text

    def to_json(self) -> dict:
        return {
            "file": self.file,
            "line": self.line,
            "col": self.col,
            "severity": self.severity,
            "message": self.message,
            "hint": self.hint,
        }


class MixerError(Exception):
    """A failure caused by input the user controls (recipe, data, flags, endpoint)."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class RecipeInvalid(MixerError):
    """Raised with every diagnostic at once, so a user fixes a recipe in one pass."""

    def __init__(self, diagnostics: list[Diagnostic]):
        self.diagnostics = diagnostics
        super().__init__("\n".join(d.format() for d in diagnostics))


def disk_full(exc: BaseException) -> bool:
    """Whether `exc` reports a full disk. Python and pyarrow set errno; polars (Rust) raises OSError or
    ComputeError without one, and only its message says "(os error 28)"."""
    return getattr(exc, "errno", None) == errno.ENOSPC or f"(os error {errno.ENOSPC})" in str(exc)


def name_too_long(exc: BaseException) -> bool:
    """Whether `exc` reports a path with a file or folder name longer than the file system allows."""
    return getattr(exc, "errno", None) == errno.ENAMETOOLONG


TOO_LONG_HINT = "shorten it: most file systems allow 255 bytes in one file or folder name"


def first_of(names: list[str], shown: int = 5) -> str:
    """`names` for a message that must stay one line: the first `shown`, then how many more there are."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def shown_value(value: Any, width: int) -> str:
    """A value as JSON for a one-line message, cut to `width` characters (a recipe's or results file's value may be
    a whole document)."""
    shown = json.dumps(value, ensure_ascii=False, default=str)
    return shown if len(shown) <= width else shown[: width - 3] + "..."
