"""A content-addressed store of teacher completions, so a killed or budget-stopped run resumes for free.

The key hashes what decides a completion (model, messages, sampling parameters) and nothing else: never the
API key, and not the base URL, so a vLLM server that moves port keeps its cache (give different weights a
different model name). sqlite in WAL mode makes each insert atomic and lets several processes share a file.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixer.errors import MixerError


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None = None


def call_key(model: str, messages: list[dict[str, str]], sampling: dict[str, Any]) -> str:
    body = json.dumps({"model": model, "messages": messages, "sampling": sampling}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


class CallCache:
    def __init__(self, path: Path) -> None:
        """Opened before any call is made: a cache that cannot be written would make every call unpaid-for
        again on the next run, so it stops the block here instead."""
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=30, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS completions (key TEXT PRIMARY KEY, model TEXT NOT NULL, text TEXT"
                " NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, finish_reason TEXT,"
                " created REAL NOT NULL)"
            )
        except (OSError, sqlite3.Error) as exc:
            raise MixerError(
                f"cannot open the evolve call cache {path}: {exc}",
                "every teacher call is kept there so that a stopped run resumes without paying again: set"
                " MIXER_CACHE_DIR to a folder you can write to",
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
