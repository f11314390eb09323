"""Stable hashing for selection and shuffling, and content hashes for files and fingerprints.

polars' own `hash` may change between releases, which would silently change which rows a recipe selects.
This is FNV-1a over UTF-8 bytes, finished with splitmix64, vectorised with numpy over Arrow buffers: the same
(salt, string) gives the same 64-bit key on every machine and every version, with no Python loop over rows.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mixer.files import write_cache_file

if TYPE_CHECKING:  # numpy, pyarrow and polars load lazily: a no-op rebuild only hashes files
    import numpy as np
    import polars as pl
    import pyarrow as pa

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
PROGRESS_BYTES = 2 << 30  # new inputs to hash before a progress bar is worth showing (~2 s here)
HASH_SLICE = 1 << 18  # strings keyed at once by `stable_hash`
RACY_SECONDS = 2.0  # a file modified this recently may change again within its mtime tick: never cached


def _fnv_scalar(data: bytes) -> int:
    h = FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return h


def _splitmix(z: np.ndarray) -> np.ndarray:
    import numpy as np

    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def stable_hash(strings: pl.Series, salt: str) -> pl.Series:
    """64-bit keys for `strings` (null hashes like ""), salted so each use draws an independent order. Hashed
    HASH_SLICE strings at a time: the arrays of one pass cost ~95 bytes per string (237 MB for a 2.5M-row
    source, twice per source in selection, at the peak of a 10M-row build), and a string's key is its own."""
    import polars as pl

    slices = range(0, max(len(strings), 1), HASH_SLICE)
    return pl.concat([_stable_hash(strings.slice(start, HASH_SLICE), salt) for start in slices], rechunk=True)


def large_strings(strings: pl.Series) -> pa.LargeStringArray:
    """`strings` as one Arrow array of 64-bit offsets and bytes, which numpy reads in place: polars' export at its
    oldest level has no string views, so no cast is needed (pyarrow.compute, which a cast loads, took 40-70 ms of
    the GIL to import in the middle of selection)."""
    import polars as pl
    import pyarrow as pa

    arrow = strings.cast(pl.String).to_arrow(compat_level=pl.CompatLevel.oldest())
    return arrow.combine_chunks() if isinstance(arrow, pa.ChunkedArray) else arrow


def _stable_hash(strings: pl.Series, salt: str) -> pl.Series:
    import numpy as np
    import polars as pl

    arrow = large_strings(strings)
    n = len(arrow)
    h = np.full(n, np.uint64(_fnv_scalar(salt.encode("utf-8") + b"\x1f")), dtype=np.uint64)
    if n:
        _, offsets_buf, data_buf = arrow.buffers()
        offsets = np.frombuffer(offsets_buf, dtype=np.int64)[arrow.offset : arrow.offset + n + 1]
        data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
        lengths = np.diff(offsets)
        if arrow.null_count:
            lengths = np.where(np.asarray(arrow.is_null()), 0, lengths)
        longest = int(lengths.max())
        # longest strings first, so the strings that still have a j-th byte are always the first k: byte j is
        # folded in over contiguous slices, without selecting them anew at each byte (3x faster on row ids)
        order = np.argsort(lengths.astype(np.uint16) if longest < 1 << 16 else lengths, kind="stable")[::-1]
        at = offsets[:-1][order]
        longer_than = n - np.cumsum(np.bincount(lengths, minlength=longest + 1))  # strings with more than j bytes
        ordered = h.copy()  # every entry is still the salt's state
        byte = np.empty(n, dtype=np.uint8)
        for j in range(longest):
            k = int(longer_than[j])
            np.take(data, at[:k], out=byte[:k])
            ordered[:k] ^= byte[:k]
            ordered[:k] *= np.uint64(FNV_PRIME)
            at[:k] += 1
        h[order] = ordered
    return pl.Series(strings.name, _splitmix(h), dtype=pl.UInt64)


@functools.cache
def code_fingerprint() -> str:
    """sha256 of this package's source: local caches of derived data (counts, benchmark hits) key on it rather
    than on the version number alone, so editing the code (an editable install between releases) never reuses
    an entry the old code computed. Not used in anything written to an output, which must not depend on how a
    checkout stores its files."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode("utf-8") + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def file_sha256(path: Path, on_read: Callable[[int], None] | None = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
            if on_read is not None:
                on_read(len(block))
    return digest.hexdigest()


def _matches(entry: Any, signature: dict[str, int]) -> bool:
    """Whether a remembered entry is for this very file; anything else in the store (a hand edit, another
    version's shape) is not, and the file is hashed again."""
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("sha256"), str)
        and all(entry.get(k) == v for k, v in signature.items())
    )


class FileHashes:
    """sha256 of input files, remembered by (size, mtime_ns, inode) as git's index does, so an unchanged
    half-gigabyte input is not read again on every rebuild. Kept in one JSON file, replaced atomically."""

    def __init__(self, store: Path) -> None:
        self.store = store
        try:
            known = json.loads(store.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            known = {}
        self.known: dict[str, dict[str, Any]] = known if isinstance(known, dict) else {}
        self.changed = False
        self.read_ahead: dict[str, dict[str, Any]] = {}  # hashed by `hash_ahead` this run, whether racy or not
        self.resolved: dict[Path, str] = {}  # resolving a path costs a stat per directory: once per run

    def _signature(self, path: Path) -> tuple[str, dict[str, int]]:
        stat = path.stat()
        key = self.resolved.get(path)
        if key is None:
            key = self.resolved[path] = str(path.resolve())
        return key, {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "inode": stat.st_ino}

    def hash_ahead(self, paths: list[Path], progress: bool = False) -> None:
        """Hash, two at a time, the files not remembered: a first build of new inputs reads each one whole
        (~1 s per 680 MB here, one after another), and hashlib releases the GIL, so two threads take ~0.4 s.
        With `progress`, a bar shows it when there is more than PROGRESS_BYTES to read: tens of gigabytes
        take a minute, which would pass in silence before the first input is parsed."""
        missing = []
        for path in dict.fromkeys(paths):
            key, signature = self._signature(path)
            if not _matches(self.known.get(key), signature) and not _matches(self.read_ahead.get(key), signature):
                missing.append((path, key, signature))
        size = sum(signature["size"] for _, _, signature in missing)
        shown = progress and size > PROGRESS_BYTES
        if len(missing) < 2 and not shown:
            return
        from concurrent.futures import ThreadPoolExecutor  # only when there is reading to share: not on a no-op

        from mixer.progress import make_progress
        from mixer.threads import wait_for

        with make_progress(shown) as bar, ThreadPoolExecutor(max_workers=2) as workers:
            task = bar.add_task("hashing new inputs (MB)", total=size / 1e6)

            def advance(read: int) -> None:
                bar.advance(task, read / 1e6)

            jobs = [workers.submit(file_sha256, path, advance if shown else None) for path, _, _ in missing]
            digests = [wait_for(job) for job in jobs]
        for (_, key, signature), digest in zip(missing, digests, strict=True):
            self.read_ahead[key] = {**signature, "sha256": digest}

    def sha256(self, path: Path) -> str:
        key, signature = self._signature(path)
        entry = self.known.get(key)
        if _matches(entry, signature):
            return entry["sha256"]
        ahead = self.read_ahead.get(key)
        digest = ahead["sha256"] if _matches(ahead, signature) else file_sha256(path)
        if time.time() - signature["mtime_ns"] / 1e9 > RACY_SECONDS:
            self.known[key] = {**signature, "sha256": digest}
            self.changed = True
        return digest

    def save(self) -> None:
        if self.changed:
            write_cache_file(self.store, json.dumps(self.known, sort_keys=True))


def fingerprint(value: Any) -> str:
    """sha256 of a JSON-able value in canonical form (sorted keys, no whitespace)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
