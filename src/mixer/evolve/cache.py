"""A content-addressed store of teacher completions, so a killed or budget-stopped run resumes for free.

The key hashes what decides a completion (who serves it, model, messages, sampling parameters) and nothing
else: never the API key. Who serves it is the OpenAI API, this machine, or another host by name (`served_by`):
a model name says little on its own (a local server or a test stub may answer as "gpt-3.5-turbo"), so their
completions must never be handed to a run against the real API. The port is left out, so a vLLM server that
moves port keeps its cache (give different weights a different model name).

sqlite makes each insert atomic and lets several processes share a file: in WAL mode on a local disk; on a
network filesystem (a cluster's shared home), where WAL's shared memory does not reach the other hosts, with
sqlite's rollback journal instead.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mixer.errors import MixerError

# filesystem types whose files other hosts may open too (mount types of /proc/self/mountinfo)
NETWORK_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "lustre", "gpfs", "beegfs", "9p", "afs"}
)


def filesystem_type(path: Path, mountinfo: str | None = None) -> str | None:
    """The type of the filesystem holding `path` (Linux), from the mount whose point is its longest prefix."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
    target, best, found = path.resolve(), -1, None
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if len(fields) < 5 or not rest:
            continue
        point = Path(fields[4].replace("\\040", " "))
        if (target == point or point in target.parents) and len(point.parts) > best:
            best, found = len(point.parts), rest[0]
    return found


def shared_between_hosts(fstype: str | None) -> bool:
    return fstype is not None and (fstype in NETWORK_FILESYSTEMS or fstype.startswith("fuse."))


TOO_LONG = "too_long"  # our finish_reason for a prompt the server refused as longer than the model's context


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None = None
    refusal: str | None = None  # the server's words, when finish_reason is TOO_LONG (never cached)


LOOPBACK_HOSTS = ("localhost", "::1", "0.0.0.0")
OPENAI_API_HOST = "api.openai.com"


def served_by(base_url: str | None) -> str:
    """Who answers an endpoint's calls: the OpenAI API (no base_url), this machine (any loopback address, so
    `localhost` and `127.0.0.1` share a cache), or another host by its name; never the port or path."""
    if not base_url:
        return OPENAI_API_HOST
    host = (urlsplit(base_url).hostname or base_url).lower()
    return "localhost" if host in LOOPBACK_HOSTS or host.startswith("127.") else host


def call_key(served: str, model: str, messages: list[dict[str, str]], sampling: dict[str, Any]) -> str:
    body = {"served_by": served, "model": model, "messages": messages, "sampling": sampling}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


class CallCache:
    def __init__(self, path: Path) -> None:
        """Opened before any call is made: a cache that cannot be written would make every call unpaid-for
        again on the next run, so it stops the block here instead."""
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=30, isolation_level=None)
            journal = "DELETE" if shared_between_hosts(filesystem_type(path.parent)) else "WAL"
            self._db.execute(f"PRAGMA journal_mode={journal}")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS completions (key TEXT PRIMARY KEY, model TEXT NOT NULL, text TEXT"
                " NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, finish_reason TEXT,"
                " created REAL NOT NULL)"
            )
        except (OSError, sqlite3.OperationalError) as exc:  # cannot be created or opened where it is
            raise MixerError(
                f"cannot open the evolve call cache {path}: {exc}",
                "every teacher call is kept there so that a stopped run resumes without paying again: set"
                " MIXER_CACHE_DIR to a folder you can write to",
            ) from None
        except sqlite3.DatabaseError as exc:  # the file is there but is not a database (damaged, or not mixer's)
            raise MixerError(
                f"cannot open the evolve call cache {path}: {exc}",
                f"move it aside (mv {path} {path}.damaged) and run again; the calls it held are asked again, so"
                " keep the copy if they were paid for",
            ) from None

    def get(self, key: str) -> Completion | None:
        row = self._db.execute(
            "SELECT text, prompt_tokens, completion_tokens, finish_reason FROM completions WHERE key = ?", (key,)
        ).fetchone()
        return Completion(*row) if row else None

    def put(self, key: str, model: str, completion: Completion) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO completions VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                key,
                model,
                completion.text,
                completion.prompt_tokens,
                completion.completion_tokens,
                completion.finish_reason,
                time.time(),
            ),
        )

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM completions").fetchone()[0]

    def close(self) -> None:
        self._db.close()
