"""Which build owns the hidden names beside an output: each build holds a lock on a file of its own.

A build writes into `.NAME.tmp-TOKEN` beside the output NAME and sets the previous output aside as
`.NAME.old-TOKEN` while it renames. A killed build leaves those behind, so the next build clears them. It used
to judge them by the process id in their names. A process id says nothing across containers (PID namespaces
start at 1) or across the hosts of a shared filesystem. There, a build cleared another one's temp dir while it
was writing, and two builds with one PID shared a temp dir. Now the token is random. The build holds an
exclusive `flock` on `.NAME.build-TOKEN.lock` until it has finished. The kernel drops that lock when the process
dies, however it dies (kill -9 included), and NFS carries such locks between hosts. A leftover is cleared only
when its lock can be taken, and nothing is cleared where a lock cannot be tried.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: builds run, and a killed build's leftovers stay for the user to remove
    fcntl = None  # type: ignore[assignment]

KINDS = ("tmp", "old")
_BUSY = (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK)
LEGACY_DIGITS = 7  # a process id (at most 4,194,304 on Linux); tokens have 12 hex digits


@dataclass
class Claim:
    """A build's hold on its names beside `out_dir`, until `release`. `fd` is None where the filesystem offers no
    locks: the build still runs, and its leftovers are never cleared by another build."""

    out_dir: Path
    token: str
    fd: int | None

    def path(self, kind: str) -> Path:
        return _named(self.out_dir, kind, self.token)

    @property
    def temp(self) -> Path:
        return self.path("tmp")

    @property
    def set_aside(self) -> Path:
        return self.path("old")

    def release(self) -> None:
        """Unlinked before it is unlocked, so no other build can take a lock on a file this one still names."""
        _lock_file(self.out_dir, self.token).unlink(missing_ok=True)
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _named(out_dir: Path, kind: str, token: str) -> Path:
    return out_dir.parent / f".{out_dir.name}.{kind}-{token}"


def _lock_file(out_dir: Path, token: str) -> Path:
    return out_dir.parent / f".{out_dir.name}.build-{token}.lock"


def _try_lock(fd: int) -> bool | None:
    """True when this process now holds the lock, False when another does, None when the filesystem has none."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        return False if exc.errno in _BUSY else None
    return True


def _still_named(fd: int, path: Path) -> bool:
    """Whether `path` is still the file `fd` has open: a build clearing leftovers may have unlinked it between
    its creation and its lock."""
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def claim(out_dir: Path) -> Claim:
    """A fresh token for a build of `out_dir`, with its lock held; `out_dir.parent` must exist."""
    while True:
        token = secrets.token_hex(6)
        lock = _lock_file(out_dir, token)
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        locked = _try_lock(fd)
        if locked is None:  # nothing to hold: the file only names the build
            os.close(fd)
            return Claim(out_dir, token, None)
        if locked and _still_named(fd, lock):
            return Claim(out_dir, token, fd)
        os.close(fd)  # taken over as a leftover in between: try another token


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clear(out_dir: Path, token: str) -> None:
    shutil.rmtree(_named(out_dir, "tmp", token), ignore_errors=True)
    aside = _named(out_dir, "old", token)
    if aside.exists():  # killed between its two renames: the previous output goes back unless replaced since
        if out_dir.exists():
            shutil.rmtree(aside, ignore_errors=True)
        else:
            aside.rename(out_dir)


def clear_leftovers(out_dir: Path) -> None:
    """Remove what killed builds of `out_dir` left beside it, putting back a previous output one had set aside.
    Names from mixer versions before the locks end in a process id and are judged by it, as those versions did."""
    tokens: set[str] = set()
    for kind in KINDS:
        tokens.update(p.name.rsplit("-", 1)[1] for p in out_dir.parent.glob(f".{out_dir.name}.{kind}-*"))
    locks = out_dir.parent.glob(f".{out_dir.name}.build-*.lock")
    tokens.update(p.name.removesuffix(".lock").rsplit("-", 1)[1] for p in locks)
    for token in sorted(tokens):
        lock = _lock_file(out_dir, token)
        if token.isdigit() and len(token) <= LEGACY_DIGITS and not lock.exists():
            if not _pid_alive(int(token)):
                _clear(out_dir, token)
            continue
        try:
            fd = os.open(lock, os.O_RDWR)
        except FileNotFoundError:  # its build got as far as unlinking the lock: what is left has no owner
            _clear(out_dir, token)
            continue
        try:
            if _try_lock(fd) and _still_named(fd, lock):
                _clear(out_dir, token)
                lock.unlink(missing_ok=True)
        finally:
            os.close(fd)
