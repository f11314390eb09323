"""Whole-file writes that a crash cannot leave half done: write a sibling temp file, then rename over."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temp path beside `path`, renamed over it when the block ends and removed if the block fails. Its name is
    random, not the process id: two writers of one file (builds on two hosts sharing a cache, or in two containers,
    where process ids repeat) must not write into the same temp file."""
    temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        yield temp
        os.replace(temp, path)
    finally:
        with contextlib.suppress(OSError):  # gone after the rename; on a read-only disk it never existed
            temp.unlink(missing_ok=True)


def write_atomic_file(path: Path, text: str) -> None:
    with replacing(path) as temp:
        temp.write_text(text, encoding="utf-8")


def write_cache_file(path: Path, text: str) -> None:
    """Best effort, for caches: a missing or read-only cache directory only costs speed (`unwritable` lets a
    command say so once, up front)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic_file(path, text)
    except OSError:
        pass


def unwritable(folder: Path) -> str | None:
    """Why no file can be made in `folder` (made first when missing), else None. Cache writes fail in silence, so
    a read-only home on a cluster node would otherwise make every plan and no-op rebuild hash all inputs again
    with nothing said."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-probe.{secrets.token_hex(6)}"
        probe.touch(exist_ok=False)
        probe.unlink()
    except FileExistsError:
        return "a file, not a folder"
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None
