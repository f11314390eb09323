"""Remembered benchmark hits per source, so a decontaminated mix rebuilt with other takes or weights does not
split and hash every word of every row again (most of a decontaminating build's extra time).

Which rows of a source hit a benchmark depends only on the rows the source stages (its input contents, format,
field mapping, options, filters and the mixture's drop patterns), on the benchmarks (their files' contents and
fields) and on n; the key hashes exactly those, plus the package's code, where normalisation lives.
Hits are kept by position among the source's staged rows, so a renamed source reuses them. Best effort: an
entry that cannot be read is computed again, one that cannot be written only costs time.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import polars as pl

from mixer.files import replacing
from mixer.hashing import code_fingerprint, fingerprint
from mixer.resolve import ResolvedSource

HITS_SCHEMA = pl.Schema({"__pos": pl.UInt32, "benchmark": pl.String, "item": pl.String, "span": pl.String})


def hits_key(source: ResolvedSource, drop_patterns: tuple[str, ...], benchmarks: list[dict[str, Any]], n: int) -> str:
    return fingerprint(
        {
            "code": code_fingerprint(),
            "n": n,
            "benchmarks": benchmarks,
            "format": source.format,
            "fields": source.fields,
            "options": source.options,
            "filters": asdict(source.spec.filters),
            "on_error": source.on_error,
            "drop_patterns": list(drop_patterns),
            "inputs": [f.sha256 for f in source.files],
        }
    )


def _path(cache_dir: Path, key: str) -> Path:
    return cache_dir / "decontam-hits" / f"{key}.parquet"


def load(cache_dir: Path, key: str) -> pl.DataFrame | None:
    path = _path(cache_dir, key)
    if not path.is_file():
        return None
    try:
        hits = pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError):
        return None
    return hits if hits.schema == HITS_SCHEMA else None


def save(cache_dir: Path, key: str, hits: pl.DataFrame | None) -> None:
    """Keep a source's hits (none is an answer too), written under a temporary name and renamed."""
    frame = hits.select(HITS_SCHEMA.names()) if hits is not None else pl.DataFrame(schema=HITS_SCHEMA)
    path = _path(cache_dir, key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with replacing(path) as temp:
            frame.write_parquet(temp)
    except OSError:
        pass
