"""Prompt n-grams on disk, for near-duplicate search over more prompts than fit in memory.

Near dedup and the near-overlap audit used to hold every prompt, then every prompt's distinct word 5-grams
(16 bytes each, ~25 per row) and a sorted copy of them: 2.2 GB of peak at 1M input rows, ~10x that at 10M.
Only the n-grams that two to `BOILERPLATE_ROWS` prompts hold can make a pair, and whether an n-gram is one of
them is decided by that n-gram's entries alone. So while a source stages, each chunk's distinct n-grams go to
files split by the top bits of their hash; the search then reads a few of those files at a time, keeps the
shareable n-grams, and runs the prefix-filtered pair search (`overlap.pairs_sharing`) on them. The prompts
are never kept: each row keeps only its count of distinct n-grams, in its keys.

Rows are labelled `source index << 32 | position`, in the order the sources are settled, so labels increase
as positions did in the concatenation of every source's prompts, and the pairs found are the same.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from mixer.overlap import (
    NEAR_N,
    NEAR_THRESHOLD,
    candidate_pairs,
    candidate_rows,
    distinct_grams,
    passing_pairs,
    prefix_limits,
    prefixes,
    shareable,
    shared_counts,
)

PARTITION_BITS = 6  # 64 files per source, read in groups of about READ_BYTES
READ_BYTES = 32 << 20
ENTRY = np.dtype([("pos", "<u4"), ("gram", "<u8")])  # packed: 12 bytes per (row, n-gram)
POSITION_BITS = 32
KEPT_ROWS = 8_000_000  # shareable n-grams kept in memory between passes (~200 MB) rather than read again
PREFIX_ROWS = 4_000_000  # prefix n-grams gathered before they are cut to each row's prefix (then: as many again)


class GramStore:
    """Each staged source's distinct prompt n-grams, under `folder`, by source and hash partition. `add` is
    safe from several staging threads as long as they stage different sources."""

    def __init__(self, folder: Path, n: int = NEAR_N) -> None:
        self.folder = folder
        self.n = n

    def _file(self, source: str, partition: int) -> Path:
        return self.folder / f"{source.encode('utf-8').hex()}-{partition:02d}.grams"

    def add(self, source: str, first: int, prompts: pl.Series) -> pl.Series:
        """Store the n-grams of the prompts of rows `first`, `first + 1`, ... of `source`; return each row's
        count of distinct n-grams (what a pair's similarity is measured against)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        row, gram = distinct_grams(prompts, self.n)
        partition = (gram >> np.uint64(64 - PARTITION_BITS)).astype(np.uint8)
        order = np.argsort(partition, kind="stable")  # a radix sort on 8 bits: ~10x faster than on int64
        entries = np.empty(len(gram), dtype=ENTRY)
        entries["pos"] = row[order] + first
        entries["gram"] = gram[order]
        bounds = np.searchsorted(partition[order], np.arange((1 << PARTITION_BITS) + 1))
        for index in range(1 << PARTITION_BITS):
            if bounds[index] < bounds[index + 1]:
                with self._file(source, index).open("ab") as out:
                    entries[bounds[index] : bounds[index + 1]].tofile(out)
        return pl.Series("grams", np.bincount(row, minlength=len(prompts)), dtype=pl.UInt32)

    def near_pairs(
        self, sources: list[tuple[str, pl.DataFrame]], threshold: float = NEAR_THRESHOLD, progress: Any = None
    ) -> pl.DataFrame:
        """(row, row_b) labels of the near-duplicate pairs among the rows still available: `sources` gives, in
        settling order, each source's name and keys (`__pos`, `grams`).

        `overlap.pairs_sharing`'s steps, each a pass over the partitions: every row's count of shareable
        n-grams, then the rows' prefixes (each group's, cut to the first `limit` of each row whenever they
        add up to more than the prefixes so far: re-sorting them after every group took 330 s at 10M), then
        the candidate pairs' shared n-grams, added up. Only the prefixes, the candidates and one group of
        partitions are in memory (at 10M synthetic rows: 11M prefix n-grams against 175M shareable ones).
        `progress` (rich's) shows the passes over the groups: at 10M rows they take minutes."""
        alive = []
        for _, keys in sources:
            mask = np.zeros(int(keys["__pos"].max() or 0) + 1 if keys.height else 0, dtype=bool)
            mask[keys["__pos"].to_numpy()] = True
            alive.append(mask)
        groups = self._groups(sources)
        sizes = pl.concat(
            [
                keys.filter(pl.col("grams") > 0).select(
                    label(index, pl.col("__pos")).alias("row"), pl.col("grams").cast(pl.Int64).alias("size")
                )
                for index, (_, keys) in enumerate(sources)
            ]
        )
        kept: list[pl.DataFrame] | None = []  # the groups' shareable n-grams, while they are few enough

        task = None if progress is None else progress.add_task("finding near duplicates", total=3 * len(groups))

        def held_groups() -> Iterator[pl.DataFrame]:
            if kept is not None and len(kept) == len(groups):
                found: Iterable[pl.DataFrame] = kept
            else:
                found = (self._shareable(group, sources, alive) for group in groups)
            for held in found:
                yield held
                if progress is not None:
                    progress.advance(task)

        counts = [np.zeros(len(mask), dtype=np.int64) for mask in alive]
        for held in held_groups():
            if kept is not None:
                kept.append(held)
                kept = kept if sum(frame.height for frame in kept) <= KEPT_ROWS else None
            for index, _, positions in _by_source(held["row"].to_numpy()):
                counts[index] += np.bincount(positions, minlength=len(counts[index]))
        counted = pl.concat(
            [
                pl.DataFrame({"row": label(index, pl.Series(np.flatnonzero(c))), "count": c[c > 0]})
                for index, c in enumerate(counts)
            ]
        )
        limits = prefix_limits(counted, sizes, threshold)
        del counted, counts
        # each row's limit by position, so that every group finds its rows' limits without a join
        limit_at = [np.zeros(len(mask), dtype=np.uint32) for mask in alive]
        row_limits = limits["limit"].to_numpy()
        for index, mine, positions in _by_source(limits["row"].to_numpy()):
            limit_at[index][positions] = row_limits[mine]
        del limits
        prefix = self._prefixes(held_groups(), limit_at)
        del limit_at
        candidates = candidate_pairs(prefix)
        del prefix
        rows = candidate_rows(candidates)
        shared = [shared_counts(candidates, rows, held) for held in held_groups()]
        total = pl.concat(shared).group_by("row", "row_b").agg(pl.col("shared").sum())
        return passing_pairs(total, sizes, threshold)

    @staticmethod
    def _prefixes(held_groups: Iterable[pl.DataFrame], limit_at: list[np.ndarray]) -> pl.DataFrame:
        """Every row's prefix (row, g, df, limit) from the groups' shareable n-grams and each row's limit by
        position. Per source (rows of two sources never meet in a prefix, and one source's sort is a fraction of
        all of them): the prefixes so far, and each group's own prefixes, cut to the rows' prefixes once they
        add up to more than those."""
        empty = pl.DataFrame(schema={"row": pl.Int64, "g": pl.UInt64, "df": pl.UInt8, "limit": pl.UInt32})
        so_far = [empty] * len(limit_at)
        waiting: list[list[pl.DataFrame]] = [[] for _ in limit_at]
        firsts = [index << POSITION_BITS for index in range(len(limit_at) + 1)]
        for held in held_groups:
            limit = np.zeros(held.height, dtype=np.uint32)
            for index, mine, positions in _by_source(held["row"].to_numpy()):
                limit[mine] = limit_at[index][positions]
            held = held.with_columns(pl.col("df").cast(pl.UInt8), pl.Series("limit", limit)).filter(pl.col("limit") > 0)
            cut = prefixes(held)  # by row, so each source's rows are one slice
            bounds = np.searchsorted(cut["row"].to_numpy(), firsts).tolist()
            for index in range(len(limit_at)):
                if bounds[index + 1] > bounds[index]:
                    waiting[index].append(cut.slice(bounds[index], bounds[index + 1] - bounds[index]))
                if sum(frame.height for frame in waiting[index]) > max(so_far[index].height, PREFIX_ROWS):
                    so_far[index] = prefixes(pl.concat([so_far[index], *waiting[index]]))
                    waiting[index] = []
        return pl.concat([prefixes(pl.concat([done, *more])) for done, more in zip(so_far, waiting, strict=True)])

    def _groups(self, sources: list[tuple[str, pl.DataFrame]]) -> list[list[int]]:
        """Consecutive partitions of about READ_BYTES of entries together (at least one each)."""
        groups: list[list[int]] = [[]]
        size = 0
        for partition in range(1 << PARTITION_BITS):
            more = sum(self._bytes(name, partition) for name, _ in sources)
            if groups[-1] and size + more > READ_BYTES:
                groups.append([])
                size = 0
            groups[-1].append(partition)
            size += more
        return groups

    def _bytes(self, source: str, partition: int) -> int:
        path = self._file(source, partition)
        return path.stat().st_size if path.exists() else 0

    def _shareable(
        self, group: list[int], sources: list[tuple[str, pl.DataFrame]], alive: list[np.ndarray]
    ) -> pl.DataFrame:
        """(row label, g, df) of the shareable n-grams of some partitions, counted over the available rows."""
        rows, grams = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.uint64)]
        for index, (name, _) in enumerate(sources):
            for partition in group:
                path = self._file(name, partition)
                if not path.exists():
                    continue
                entries = np.fromfile(path, dtype=ENTRY)
                position = entries["pos"].astype(np.int64)
                kept = position < len(alive[index])
                kept[kept] = alive[index][position[kept]]
                rows.append(position[kept] | (index << POSITION_BITS))
                grams.append(entries["gram"][kept])
        return shareable(np.concatenate(rows), np.concatenate(grams))


def _by_source(rows: np.ndarray) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(source index, which of `rows` are its, their positions) of row labels, per source they hold."""
    sources = rows >> POSITION_BITS
    for index in np.unique(sources).tolist():
        mine = sources == index
        yield index, mine, rows[mine] & ((1 << POSITION_BITS) - 1)


def label(source_index: int, position: pl.Expr | pl.Series) -> pl.Expr | pl.Series:
    """A row's label in `GramStore.near_pairs`."""
    return position.cast(pl.Int64) + (source_index << POSITION_BITS)


def source_and_position(labels: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """The (source index, position) of row labels."""
    return labels // (1 << POSITION_BITS), (labels % (1 << POSITION_BITS)).cast(pl.UInt32)
