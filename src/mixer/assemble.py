"""Assemble the mixture in output order without holding it: an external sort in bounded buckets.

Every selected row gets its sort key from mixer.mix (the shuffle hash, or its running position). Rows go,
one staged part at a time, to bucket files by key range (bucket b holds the b-th slice of the key space, so
the buckets in order are the mixture in order); then each bucket alone is read, sorted and cut into shards.
Memory holds one part plus one bucket plus one shard, whatever the size of the mixture; the order and the
shard bytes are those of sorting everything at once.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path

import polars as pl

from mixer.decontam import first_prompt
from mixer.mix import order_keys, select_keys
from mixer.stage import Staged, mapped_table, prompt_hashes, read_mapped
from mixer.threads import wait_for

BUCKET_ROWS = 100_000  # rows sorted at once when shards are cut (~70 MB of ShareGPT-like rows)
SHARD_PATTERN = "{split}-{index:05d}-of-{count:05d}.parquet"
FILL_WORKERS = 2
SELECT_WORKERS = 2
Discard = Callable[[Callable[[], object]], None]  # takes a deleting to do, done in a thread of its own


@dataclass
class Selection:
    """The rows a source contributes, in selection order: (__pos, __index into the source's keys, __repeat,
    id, __sort), and their characters, repeats included (how long filling buckets with them takes). The ids
    are the selected rows' own (a repeat shares its id's text), so the source's keys need not keep any."""

    staged: Staged
    rows: pl.DataFrame
    chars: int

    def release(self) -> None:
        """Free the selection once its rows are in buckets (its source's keys went before filling)."""
        self.rows = self.rows.clear()

    def free_keys(self) -> None:
        """Free the source's keys: the steps after selection read the selection alone, and a large build peaks
        in the keys (at 10M input rows each 8-byte column is 80 MB)."""
        self.staged.keys = self.staged.keys.clear()


def select(staged: list[Staged], counts: dict[str, int], seed: int, shuffle: bool) -> list[Selection]:
    """Each source's `counts` rows in selection order with their ids and sort keys, two sources at a time (the
    hashing is numpy's and the sorting polars', both without the GIL). Afterwards each source's keys are
    freed: they were for selection (and dedup) alone."""
    offsets = list(accumulate((counts[s.name] for s in staged), initial=0))[:-1]  # rows of the sources before

    def one(s: Staged, offset: int) -> Selection:
        chosen = select_keys(s.keys["id"], counts[s.name], seed, s.name)
        rows = chosen.select(s.keys["__pos"].gather(chosen["__index"]), "__index", "__repeat")
        rows = rows.with_columns(s.keys["id"].gather(chosen["__index"]))
        rows = rows.with_columns(order_keys(rows, seed, shuffle, offset))
        selection = Selection(s, rows, int(s.keys["chars"].gather(chosen["__index"]).sum() or 0))
        selection.free_keys()
        return selection

    with ThreadPoolExecutor(max_workers=SELECT_WORKERS) as workers:
        jobs = [workers.submit(one, s, offset) for s, offset in zip(staged, offsets, strict=True)]
        return [wait_for(job) for job in jobs]


def _bucket_of(total: int, shuffle: bool) -> tuple[int, pl.Expr]:
    """Number of buckets and each row's bucket: a slice of the 64-bit hash range (shuffle) or of positions."""
    buckets = max(1, -(-total // BUCKET_ROWS))
    if not shuffle:
        return buckets, (pl.col("__sort") // BUCKET_ROWS).cast(pl.UInt32)
    high = pl.col("__sort") // pl.lit(1 << 32, dtype=pl.UInt64)  # < 2^32, so high * buckets fits in 64 bits
    return buckets, (high * pl.lit(buckets, dtype=pl.UInt64) // pl.lit(1 << 32, dtype=pl.UInt64)).cast(pl.UInt32)


def _fill_buckets(
    selections: list[Selection],
    folder: Path,
    bucket: pl.Expr,
    on_filled: Callable[[int], None] | None,
    discard: Discard,
) -> list[pl.DataFrame]:
    """Every selected row into its bucket: staged parts are read one at a time, their selected rows gathered
    (repeats included) and appended as record batches to one Arrow IPC stream per source and bucket, so the
    files grow with the data, not their number. Two sources are filled at once (their streams are their
    own), so two parts are in memory at a time. The largest go first, so the last to finish is a small one
    and both threads stay busy to the end. Each staged part is handed to `discard` (as the deleting to do) once
    its rows are filed, and a source's other parts once all of its are. Returns each source's `prompt_hashes`,
    found on the rows while they are in memory."""
    by_size = sorted(enumerate(selections), key=lambda tagged: -tagged[1].chars)
    with ThreadPoolExecutor(max_workers=FILL_WORKERS) as workers:
        jobs = {tag: workers.submit(_fill_source, tag, s, folder, bucket, on_filled, discard) for tag, s in by_size}
        return [wait_for(jobs[tag]) for tag in range(len(selections))]  # re-raises a failure


def _fill_source(
    tag: int,
    selection: Selection,
    folder: Path,
    bucket: pl.Expr,
    on_filled: Callable[[int], None] | None,
    discard: Discard,
) -> pl.DataFrame:
    import pyarrow as pa

    # in bucket order, so each part's rows are gathered straight into it (gathering, then sorting, copied twice);
    # `__row` keeps each row's position in the bucket files, where the overlap's examples are found
    wanted = selection.rows.select(
        "__pos", "id", "__repeat", "__sort", bucket.alias("__bucket"), pl.col("__pos").alias("__row")
    ).sort("__bucket", maintain_order=True)
    writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}
    hashes = [pl.DataFrame(schema={"__row": pl.UInt32, "__bucket": pl.UInt32, "prompt_hash": pl.UInt64})]
    try:
        filed = functools.partial(_unlink_later, discard)
        for rows in selection.staged.gather_parts(wanted, filed):  # completed when the bucket is read (`_buckets`)
            hashes.append(prompt_hashes(rows, "__row", "__bucket"))
            spans = rows.group_by("__bucket", maintain_order=True).len()
            # one conversion per part; each bucket's rows are then a zero-copy slice of it
            table = rows.drop("__bucket").to_arrow()
            offset = 0
            for index, length in spans.iter_rows():
                if index not in writers:
                    _bucket_dir(folder, index).mkdir(parents=True, exist_ok=True)
                    writers[index] = pa.ipc.new_stream(str(_bucket_file(folder, index, tag)), table.schema)
                writers[index].write_table(table.slice(offset, length))
                offset += length
            if on_filled is not None:
                on_filled(rows.height)
            del rows, table  # unmapped before the part is deleted, so the deleting thread frees its pages
    finally:
        for writer in writers.values():
            writer.close()
    discard(selection.staged.discard_parts)  # those no selected row is in, and the lists
    return pl.concat(hashes).rename({"__row": "__pos"})


def _unlink_later(discard: Discard, path: Path) -> None:
    discard(functools.partial(path.unlink, missing_ok=True))


def _bucket_dir(folder: Path, index: int) -> Path:
    return folder / f"{index:06d}"


def _bucket_file(folder: Path, index: int, tag: int) -> Path:
    """Where source `tag`'s rows of bucket `index` are filed (`_buckets` reads the tag back off the name)."""
    return _bucket_dir(folder, index) / f"{tag:04d}.arrows"


def _buckets(folder: Path, buckets: int, staged: list[Staged]) -> Iterator[tuple[pl.DataFrame, pl.Series]]:
    """Each bucket's rows, completed (`Staged.complete`: file `tag` holds rows of `staged[tag]`), in one
    chunk (views of the filed batches: ~4 ms), and the order that sorts them (by key, then id and repeat: a
    total order, so the same rows always sort the same way)."""
    for index in range(buckets):
        target = _bucket_dir(folder, index)
        if not target.is_dir():
            continue
        files = sorted(target.iterdir())
        rows = pl.concat([staged[int(f.stem)].complete(read_mapped(f, stream=True)) for f in files]).rechunk()
        shutil.rmtree(target)  # the frame maps its files: their pages are freed with it
        order = rows.select(pl.arg_sort_by("__sort", "id", "__repeat").cast(pl.Int64)).to_series()
        yield rows.select(c for c in rows.columns if not c.startswith("__")), order


def _take(pending: list[tuple[pl.DataFrame, pl.Series]], n: int) -> tuple[pl.DataFrame, list]:
    """The next `n` rows in order, gathered from the buckets that hold them, and what is left.

    Gathering straight into the shard both sorts and copies: the shard owns exactly its values (the parquet
    writer cuts pages by array size, so a slice still carrying its neighbours' list values would be written
    as different bytes depending on how the buckets happened to be cut). Buckets hold consecutive key ranges,
    so each is gathered alone, from one chunk (`_buckets` rechunks them): polars gathers conversations across
    chunks ~10x slower (118 against 12 ms per 91K-row bucket of 45 record batches)."""
    parts, left = [], []
    taken = 0
    for rows, order in pending:
        k = min(n - taken, order.len())
        if k:
            parts.append(rows.gather(order.head(k)))
            taken += k
        if k < order.len():
            left.append((rows, order.slice(k)))
    if not parts:
        return pending[0][0].clear() if pending else pl.DataFrame(), left
    return (pl.concat(parts).rechunk() if len(parts) > 1 else parts[0]), left


def held_out_copies_of_training_rows(selections: list[Selection], eval_rows: int) -> dict[str, int]:
    """Per source, the rows of the test split (the last `eval_rows` of the order) that are copies of a row the
    train split also holds: an upsampled source (fraction > 1) repeats rows, and the shuffle may put one copy
    on each side of the cut, so that row's test loss is not a held-out loss. Only sources with repeats can
    have any. The order is the one `shards` writes (sort key, then id, then repeat); the cut is found on the
    sort keys alone (8 bytes a row), ids are read only for rows whose key ties the cut's."""
    upsampled = [s for s in selections if s.rows.height and s.rows["__repeat"].max()]
    if not eval_rows or not upsampled:
        return {}
    keys = pl.concat([s.rows["__sort"] for s in selections])
    cut = keys.top_k(eval_rows).min()  # the lowest key in the test split
    above = int((keys > cut).sum())  # rows all in the test split; of those tied at the cut, the last by id go too
    tied = pl.concat([s.rows.filter(pl.col("__sort") == cut).select("id", "__repeat") for s in selections])
    held_ties = tied.sort("id", "__repeat").tail(eval_rows - above).with_columns(pl.lit(True).alias("__held"))
    copied = {}
    for selection in upsampled:
        rows = selection.rows.select("__index", "__sort", "id", "__repeat")
        rows = rows.join(held_ties, on=["id", "__repeat"], how="left")  # a copy is its (id, repeat), not its index
        in_test = (pl.col("__sort") > cut) | pl.col("__held").fill_null(False)
        sides = rows.group_by("__index").agg(in_test.sum().alias("in_test"), pl.len().alias("all"))
        count = sides.filter((pl.col("in_test") > 0) & (pl.col("in_test") < pl.col("all")))["in_test"].sum()
        if count:
            copied[selection.staged.name] = int(count)
    return copied


def shard_plan(total: int, eval_rows: int, shard_rows: int) -> list[tuple[str, int]]:
    """(file name, rows) of every shard in order: the `train` split, then the `test` split's held-out rows (the
    last of the order). An empty mixture still gets one `train` shard, with the schema."""
    planned = []
    for split, rows in (("train", total - eval_rows), ("test", eval_rows)):
        if split == "test" and not rows:
            continue
        count = max(1, -(-rows // shard_rows))
        planned += [
            (SHARD_PATTERN.format(split=split, index=i, count=count), min(shard_rows, rows - i * shard_rows))
            for i in range(count)
        ]
    return planned


@dataclass
class Buckets:
    """The selected rows filed into sort buckets (`fill_buckets`), with what was learnt while filing them."""

    folder: Path
    count: int
    rows: int
    staged: list[Staged]
    empty: pl.DataFrame | None  # an empty mixture's one shard (the schema), read while the staged parts exist
    # (__pos, __bucket, prompt_hash) of each distinct selected row, per source: what the overlap matrix compares
    prompts: dict[str, pl.DataFrame]
    # the staged parts, deleted in a thread of their own as each one's rows are filed: unlinking the 1M
    # benchmark's 0.7 GB is ~0.2 s of waiting on the disk, which held up the filling threads when they did it
    deleted: list[Future[None]]

    def prompt_text(self, source: str, positions: pl.Series) -> list[str]:
        """The normalised first prompts of the source's selected rows at `positions`, in that order, read from
        its bucket files (the overlap's examples: the staged parts are gone once the buckets are filled)."""
        import pyarrow as pa

        tag = [s.name for s in self.staged].index(source)
        wanted = pl.DataFrame({"__row": positions.cast(pl.UInt32)}).with_row_index("__at")
        wanted = wanted.join(self.prompts[source].select(pl.col("__pos").alias("__row"), "__bucket"), on="__row")
        found = []
        for (index,), mine in wanted.partition_by("__bucket", as_dict=True).items():
            table = mapped_table(_bucket_file(self.folder, index, tag), stream=True)
            keys = pl.DataFrame(pl.from_arrow(table.select(["__row", "__repeat"]))).with_row_index("__i")
            keys = keys.join(mine, on="__row").filter(pl.col("__repeat") == 0)
            # only these rows become polars', each a slice: `take` on the file's batches took ~10 ms a file
            picked = pa.concat_tables([table.slice(i, 1) for i in keys["__i"]])
            found.append(pl.DataFrame(pl.from_arrow(picked)).with_columns(keys["__at"]))
        if not found:
            return []
        rows = pl.concat(found).sort("__at")
        return rows.select(first_prompt(rows)).to_series().to_list()


def fill_buckets(
    selections: list[Selection], folder: Path, shuffle: bool, on_filled: Callable[[int], None] | None = None
) -> Buckets:
    """Every selected row into the sort bucket of its key, under `folder`, and each distinct selected row's
    prompt hash (what the overlap matrix compares); each staged part is deleted, by a thread of its own, once
    its rows are filed. `on_filled` hears how many rows each staged part put into buckets, for progress."""
    total = sum(s.rows.height for s in selections)
    first = selections[0].staged if selections and not total else None
    empty = first.complete(first.read_part(0).clear()) if first is not None else None
    count, bucket = _bucket_of(total, shuffle)
    deleting, deleted = ThreadPoolExecutor(max_workers=1), []

    def discard(delete: Callable[[], object]) -> None:
        deleted.append(deleting.submit(delete))

    try:
        prompts = _fill_buckets(selections, folder, bucket, on_filled, discard)
    finally:
        deleting.shutdown(wait=False)  # its thread ends once what was handed to it is deleted
    for selection in selections:  # from here on only bucket files and shards are in play
        selection.release()
    names = [s.staged.name for s in selections]
    staged = [s.staged for s in selections]
    return Buckets(folder, count, total, staged, empty, dict(zip(names, prompts, strict=True)), deleted)


def shards(buckets: Buckets, shard_rows: int, eval_rows: int = 0) -> Iterator[tuple[str, pl.DataFrame]]:
    """(file name, rows) of each shard in order, read bucket by bucket; the buckets go as they are read. The
    last `eval_rows` rows of the order go to `test` shards."""
    wanted = iter(shard_plan(buckets.rows, eval_rows, shard_rows))
    name, size = next(wanted)
    pending: list[tuple[pl.DataFrame, pl.Series]] = []
    held = 0
    for rows, order in _buckets(buckets.folder, buckets.count, buckets.staged):
        pending.append((rows, order))
        held += order.len()
        while size and held >= size:
            shard, pending = _take(pending, size)
            yield name, shard
            held -= size
            name, size = next(wanted, ("", 0))
    if name:  # the empty mixture's one shard, with the schema
        if not pending and buckets.empty is not None:
            pending = [(buckets.empty, pl.Series([], dtype=pl.Int64))]
        shard, _ = _take(pending, 0)
        yield name, shard
    for done in buckets.deleted:
        wait_for(done)  # re-raises a failure
    shutil.rmtree(buckets.folder, ignore_errors=True)
