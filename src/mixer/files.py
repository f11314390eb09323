"""Whole-file writes that a crash cannot leave half done: write a sibling temp file, then rename over."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic_file(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temp.write_text(text, encoding="utf-8")
    temp.replace(path)


def write_cache_file(path: Path, text: str) -> None:
    """Best effort, for caches: a missing or read-only cache directory only costs speed."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic_file(path, text)
    except OSError:
        pass
