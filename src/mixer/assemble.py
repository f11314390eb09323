"""Assemble the mixture in output order without holding it: an external sort in bounded buckets.

Every selected row gets its sort key from mixer.mix (the shuffle hash, or its running position). Rows go,
one staged part at a time, to bucket files by key range (bucket b holds the b-th slice of the key space, so
the buckets in order are the mixture in order); then each bucket alone is read, sorted and cut into shards.
Memory holds one part plus one bucket plus one shard, whatever the size of the mixture; the order and the
shard bytes are those of sorting everything at once.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from mixer.mix import order_keys, select_keys, with_repeat
from mixer.stage import Staged

BUCKET_ROWS = 100_000  # rows sorted at once when shards are cut (~70 MB of ShareGPT-like rows)
SHARD_PATTERN = "train-{index:05d}-of-{count:05d}.parquet"


@dataclass
class Selection:
    """The rows a source contributes: (__pos, id, __repeat, __sort) in selection order."""

    staged: Staged
    rows: pl.DataFrame

    def release(self) -> None:
        """Free the keys of this selection and of its source once the rows are in buckets."""
        self.rows = self.rows.clear()
        self.staged.keys = self.staged.keys.clear()

    def distinct(self) -> pl.DataFrame:
        """(__pos, prompt_hash) of each selected row once (repeats of upsampled rows left out)."""
        chosen = self.rows.filter(pl.col("__repeat") == 0).select("__pos")
        return self.staged.keys.select("__pos", "prompt_hash").join(chosen, on="__pos")


def select(staged: list[Staged], counts: dict[str, int], seed: int, shuffle: bool) -> list[Selection]:
    selections, offset = [], 0
    for s in staged:
        chosen = select_keys(s.keys["id"], counts[s.name], seed, s.name)
        rows = chosen.select(
            s.keys["__pos"].gather(chosen["__index"]), s.keys["id"].gather(chosen["__index"]), "__repeat"
        )
        rows = rows.with_columns(order_keys(rows, seed, shuffle, offset))
        selections.append(Selection(s, rows))
        offset += rows.height
    return selections


def _bucket_of(total: int, shuffle: bool) -> tuple[int, pl.Expr]:
    """Number of buckets and each row's bucket: a slice of the 64-bit hash range (shuffle) or of positions."""
    buckets = max(1, -(-total // BUCKET_ROWS))
    if not shuffle:
        return buckets, (pl.col("__sort") // BUCKET_ROWS).cast(pl.UInt32)
    high = pl.col("__sort") // pl.lit(1 << 32, dtype=pl.UInt64)  # < 2^32, so high * buckets fits in 64 bits
    return buckets, (high * pl.lit(buckets, dtype=pl.UInt64) // pl.lit(1 << 32, dtype=pl.UInt64)).cast(pl.UInt32)


def _fill_buckets(selections: list[Selection], folder: Path, bucket: pl.Expr) -> None:
    """Every selected row into its bucket: staged parts are read one at a time, their selected rows gathered
    (repeats included) and appended as record batches to one Arrow IPC stream per source and bucket, so the
    files grow with the data, not their number, and one part is in memory at a time."""
    import pyarrow as pa

    for tag, selection in enumerate(selections):
        wanted = selection.rows.select("__pos", "id", "__repeat", "__sort", bucket.alias("__bucket"))
        writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}
        try:
            for rows in selection.staged.gather_parts(wanted):
                # one conversion per part; each bucket's rows are then a zero-copy slice of it
                rows = with_repeat(rows).sort("__bucket")
                spans = rows.group_by("__bucket", maintain_order=True).len()
                table = rows.drop("__bucket").to_arrow()
                offset = 0
                for index, length in spans.iter_rows():
                    if index not in writers:
                        target = folder / f"{index:06d}"
                        target.mkdir(parents=True, exist_ok=True)
                        writers[index] = pa.ipc.new_stream(str(target / f"{tag:04d}.arrows"), table.schema)
                    writers[index].write_table(table.slice(offset, length))
                    offset += length
        finally:
            for writer in writers.values():
                writer.close()


def _sorted_buckets(folder: Path, buckets: int) -> Iterator[pl.DataFrame]:
    for index in range(buckets):
        target = folder / f"{index:06d}"
        if not target.is_dir():
            continue
        rows = pl.concat([pl.read_ipc_stream(f) for f in sorted(target.iterdir())]).sort("__sort", "id", "__repeat")
        shutil.rmtree(target)
        yield rows.select(c for c in rows.columns if not c.startswith("__"))


def compact(rows: pl.DataFrame) -> pl.DataFrame:
    """A fresh copy whose nested columns hold only their own values. The parquet writer cuts pages by the size
    of the arrays, and a slice of a sorted bucket can still carry its neighbours' list values: without this,
    the same rows would be written as different bytes depending on how buckets happened to be cut."""
    return rows[pl.int_range(rows.height, eager=True)]


def shards(
    selections: list[Selection], folder: Path, shard_rows: int, shuffle: bool
) -> Iterator[tuple[str, pl.DataFrame]]:
    """(file name, rows) of each shard in order; `folder` holds the buckets while they are needed. The
    selections, and their sources' keys, are released once the buckets are filled."""
    total = sum(s.rows.height for s in selections)
    buckets, bucket = _bucket_of(total, shuffle)
    _fill_buckets(selections, folder, bucket)
    for selection in selections:  # from here on only bucket files and shards are in play
        selection.release()
    empty = selections[0].staged.read_part(0).clear() if selections else pl.DataFrame()
    count = max(1, -(-total // shard_rows))
    pending: list[pl.DataFrame] = []
    held = index = 0
    for rows in _sorted_buckets(folder, buckets):
        pending.append(rows)
        held += rows.height
        while held >= shard_rows:
            merged = pl.concat(pending)
            yield SHARD_PATTERN.format(index=index, count=count), compact(merged.head(shard_rows))
            index += 1
            pending, held = [merged.slice(shard_rows)], held - shard_rows
    if held or index == 0:  # the last, shorter shard; an empty mixture still gets one shard with the schema
        yield SHARD_PATTERN.format(index=index, count=count), compact(pl.concat([*pending, empty]))
    shutil.rmtree(folder, ignore_errors=True)
