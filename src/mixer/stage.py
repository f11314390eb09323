"""Staging: as a source loads, chunk by chunk, its rows go to disk and only their keys stay in memory.

A build used to hold every source's rows, then the whole mixture, at once (2.4 GB of RSS for 1M input rows).
Selection, dedup, decontamination, the output order and the overlap matrix need only a few columns per row,
so each chunk of a source is written to the build's temp dir (uncompressed Arrow IPC, in parts of at most
PART_ROWS rows) as soon as it is converted, and read back one part at a time by whoever needs rows. Memory
then follows the chunks being loaded, not the sum of all inputs. The parts go away with the temp dir.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from mixer.adapters.base import content_chars
from mixer.decontam import first_prompt, first_turn, normalise
from mixer.load import Pool, Shared, add_counts, unique_ids
from mixer.mix import normalised_text, with_repeat
from mixer.resolve import ResolvedSource

if TYPE_CHECKING:
    import pyarrow as pa

    from mixer.decontam import Index
    from mixer.gram_store import GramStore

PART_ROWS = 100_000
MIN_PART_BYTES = 8 << 20  # smaller chunks (of small files) share a part: each part costs a file and a read
PAYLOAD_COLUMNS = ("messages", "prompt", "chosen", "rejected")
# two independently seeded 64-bit hashes of the normalised text stand for the text in exact dedup: equal
# texts always collide, and two different texts share both with probability ~2^-128
DEDUP_SEEDS = {"h1": 0x6D69786572, "h2": 0x6465647570}


@dataclass
class Staged:
    """A cleaned source: its rows in `parts` on disk (part i holds positions starts[i]..); `keys` has one row
    per row still available, in file order: __pos, id, chars, for `mixer decontam` prompt_hash, the dedup hashes
    h1/h2 until dedup has run (when the recipe deduplicates), and the prompt's count of distinct n-grams
    (`grams`) when near dedup or the near-overlap audit needs it (the n-grams themselves are in a `GramStore`).
    Selection then frees them (mixer.assemble).

    Rows read from files are staged without the columns all of them share (`shared`: `dataset` and most of
    `meta`), with their `__lang`; `complete` gives them back. Staged parts of the 1M benchmark: 862 → 731 MB;
    its build ~0.2-0.3 s faster (benchmarks/HISTORY.md, "Eighth session")."""

    source: ResolvedSource
    parts: list[Path]
    starts: list[int]
    keys: pl.DataFrame
    counts: dict[str, int]
    rejects: pl.DataFrame | None = None
    hits: pl.DataFrame | None = None  # benchmark hits (__pos, id, benchmark, item, span), when decontaminating
    shared: Shared | None = None  # None: the parts hold whole rows (evolved ones, whose meta is their own)

    @property
    def name(self) -> str:
        return self.source.spec.name

    @property
    def available(self) -> int:
        return self.keys.height

    @property
    def chars(self) -> int:
        return int(self.keys["chars"].sum() or 0)

    def read_part(self, index: int) -> pl.DataFrame:
        return read_mapped(self.parts[index])

    def drop(self, step: str, keep: pl.Series | pl.Expr) -> None:
        """Remove keys (their rows stay on disk, unreferenced), counting them under `step`."""
        before = self.keys.height
        self.keys = self.keys.filter(keep)
        self.counts[step] = self.counts.get(step, 0) + before - self.keys.height

    def discard_parts(self) -> None:
        """Delete the staged rows once their selected rows are in buckets: the disk is free before shards are
        written, and the filling threads do the deleting instead of one pass at the end of the build."""
        for part in self.parts:
            part.unlink(missing_ok=True)
        self.parts, self.starts = [], []

    def gather_parts(self, wanted: pl.DataFrame, read: Callable[[Path], None] | None = None) -> Iterator[pl.DataFrame]:
        """For each part holding some of `wanted`'s `__pos`, its rows at those positions, in `wanted`'s order
        (repeats allowed), with `wanted`'s other columns: those the rows have (`id`: staged as read, final in
        `wanted`) replace theirs in place, the others are added. One part is in memory at a time. `read` hears
        each part's path once its rows are taken (the fill deletes it then)."""
        starts = pl.Series("starts", self.starts, dtype=pl.Int64)
        part_of = (starts.search_sorted(wanted["__pos"].cast(pl.Int64), side="right") - 1).alias("__part")
        for (index,), mine in wanted.with_columns(part_of).partition_by("__part", as_dict=True).items():
            rows = self.read_part(index).gather(mine["__pos"].cast(pl.Int64) - self.starts[index])
            extra = mine.drop("__pos", "__part")
            rows = rows.with_columns(extra.select(c for c in extra.columns if c in rows.columns))
            yield pl.concat([rows, extra.select(c for c in extra.columns if c not in rows.columns)], how="horizontal")
            del rows  # it maps the part, and a file deleted while mapped is freed by whoever unmaps it last
            if read is not None:
                read(self.parts[index])

    def rows_at(self, positions: pl.Series) -> pl.DataFrame:
        """The rows at `positions` (positions of available rows), in that order, with their ids as read (the
        final ids live in the keys until selection, then in the selection)."""
        wanted = pl.DataFrame({"__pos": positions.cast(pl.UInt32)}).with_row_index("__at")
        found = list(self.gather_parts(wanted))
        rows = pl.concat(found) if found else self.read_part(0).clear().with_columns(__at=pl.lit(0, pl.UInt32))
        return self.complete(rows).sort("__at").drop("__at")

    def complete(self, rows: pl.DataFrame) -> pl.DataFrame:
        """Rows as read from the parts (with any `__` columns added since, such as `__repeat`) made canonical
        rows again: the shared columns put back, and each row's `__repeat` (0 without one) in its meta."""
        if self.shared is None:
            return with_repeat(rows) if "__repeat" in rows.columns else rows
        repeat = pl.col("__repeat") if "__repeat" in rows.columns else pl.lit(0, dtype=pl.Int32)
        payload = [c for c in PAYLOAD_COLUMNS if c in rows.columns]
        extra = [c for c in rows.columns if c.startswith("__") and c != "__lang"]
        return rows.select(
            "id",
            pl.lit(self.shared.dataset).alias("dataset"),
            *payload,
            self.shared.meta(pl.col("__lang"), repeat),
            *extra,
        )


def slim(rows: pl.DataFrame) -> pl.DataFrame:
    """Staged rows of a file-backed source: without the columns every row shares (`Staged.complete`)."""
    payload = [c for c in PAYLOAD_COLUMNS if c in rows.columns]
    return rows.select("id", *payload, pl.col("meta").struct.field("lang").alias("__lang"))


def read_mapped(path: Path, *, stream: bool = False) -> pl.DataFrame:
    """An uncompressed Arrow IPC file (with `stream`, an IPC stream) mapped into memory instead of copied:
    polars' readers copy it all first (~30 ms per 86 MB part; a 70 MB sort bucket, ~30 against ~10 ms). A
    part's pages are read only where rows are gathered from it, and the map goes with the last frame using
    it, so a deleted file's space is freed then."""
    return pl.from_arrow(mapped_table(path, stream=stream))  # type: ignore[return-value]


def mapped_table(path: Path, *, stream: bool = False) -> pa.Table:
    """`read_mapped` as the Arrow table: for reading a few columns, or a few rows, without converting the
    rest to polars (which turns every string into a view: ~5 ms for a 70 MB sort bucket)."""
    import pyarrow as pa

    with pa.memory_map(str(path)) as source:
        reader = pa.ipc.open_stream(source) if stream else pa.ipc.open_file(source)
        return reader.read_all()


def row_keys(rows: pl.DataFrame, offset: int, *, keep_prompts: bool, dedup: bool, overlap: bool) -> pl.DataFrame:
    """The per-row facts mixing needs: position, id, characters (token estimates), with `overlap` the hash of
    the normalised first prompt (overlap between sources; null when there is none), with `dedup` the hashes
    h1/h2 of the normalised conversation (a third of the work here, so only when asked), the prompt itself on
    request."""
    payload = [c for c in PAYLOAD_COLUMNS if c in rows.columns]
    extra: list[pl.Expr | pl.Series] = []
    if dedup and "messages" in rows.columns:
        text = normalised_text(rows).to_frame("text")
        extra = list(text.select(pl.col("text").hash(seed).alias(h) for h, seed in DEDUP_SEEDS.items()))
    elif dedup:  # preference pairs: no conversation to compare, which `Deduplicator` tells by null hashes
        extra = [pl.lit(None, dtype=pl.UInt64).alias(h) for h in DEDUP_SEEDS]
    if overlap or keep_prompts:
        extra.append(first_prompt(rows).alias("prompt"))
    keys = rows.select(
        pl.int_range(offset, offset + pl.len(), dtype=pl.UInt32).alias("__pos"),
        "id",
        pl.sum_horizontal(content_chars(pl.col(c)) for c in payload).cast(pl.Int64).alias("chars"),
        *extra,
    )
    if overlap:
        keys = keys.with_columns(_prompt_hash(pl.col("prompt")))
    return keys if keep_prompts else keys.drop("prompt", strict=False)


def _prompt_hash(prompt: pl.Expr) -> pl.Expr:
    """`prompt_hash` of a column of normalised prompts (null for none or an empty one). A column, not the
    expression that normalises: polars evaluates an expression once per use, so each use here would normalise
    again (2.23 against 0.83 s for FLAN's prompts)."""
    return pl.when(prompt.is_not_null() & (prompt != "")).then(prompt.hash(0x70726F6D7074)).alias("prompt_hash")


def prompt_hashes(rows: pl.DataFrame, *keep: str) -> pl.DataFrame:
    """(`keep` columns, prompt_hash) of the rows that are not repeats (`__repeat` 0): the overlap matrix counts
    each selected row once. Their first turns are found before the filter, which would otherwise copy whole
    conversations, and normalised after it, so a repeat costs no normalising."""
    firsts = rows.select(*keep, "__repeat", first_turn(rows).alias("prompt")).filter(pl.col("__repeat") == 0)
    prompts = firsts.select(*keep, normalise(pl.col("prompt")).alias("prompt"))
    return prompts.select(*keep, _prompt_hash(pl.col("prompt")))


def stage_chunks(
    source: ResolvedSource,
    chunks: Iterable[Pool],
    folder: Path | None,
    tag: str,
    *,
    grams: GramStore | None = None,
    dedup: bool = False,
    index: Index | None = None,
    known_hits: pl.DataFrame | None = None,
    hash_prompts: bool = False,
) -> Staged:
    """Write each chunk's rows to `folder` as it comes (chunks of small files together, in parts of at least
    MIN_PART_BYTES; at least one part, so the schema is always on disk) and keep its keys. Benchmark hits
    are found here too, while the rows are in memory, unless they are already known from an earlier build
    (`known_hits`: __pos, benchmark, item, span). Without a `folder` only counts and keys are kept (`mixer
    plan`: no rows to read back). With `grams`, every prompt's n-grams go there. With `hash_prompts` the keys
    have each row's `prompt_hash`, for `mixer decontam`'s overlap matrix of every row; a build hashes its
    selected rows' prompts alone, while it fills its sort buckets (mixer.assemble)."""
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    parts: list[Path] = []
    starts: list[int] = []
    keys, hits, rejects, ids = [], [], [], []
    counts: dict[str, int] = {}
    source_rows = 0
    last: pl.DataFrame | None = None
    waiting: list[pl.DataFrame] = []  # rows not yet in a part, in order, ending at source_rows
    waiting_bytes = 0

    def write_parts(folder: Path) -> None:
        nonlocal waiting_bytes
        rows = pl.concat(waiting) if len(waiting) > 1 else waiting[0]
        first = source_rows - rows.height
        for offset in range(0, rows.height, PART_ROWS):
            parts.append(folder / f"{tag}-{len(parts):05d}.arrow")
            starts.append(first + offset)
            rows.slice(offset, PART_ROWS).rechunk().write_ipc(parts[-1], compression="uncompressed")
        waiting.clear()
        waiting_bytes = 0

    shared: Shared | None = None
    for chunk in chunks:
        rows = chunk.rows.drop("__order", strict=False)
        shared = chunk.shared
        add_counts(counts, chunk.counts)
        if chunk.rejects is not None:
            rejects.append(chunk.rejects)
        if chunk.ids is not None:
            ids.append(chunk.ids)
        positions = pl.int_range(source_rows, source_rows + pl.len(), dtype=pl.UInt32)
        if index is not None:  # keyed by position: the final ids are known only once the source is read
            hits.append(index.hits(rows.with_columns(positions.cast(pl.String).alias("id"))))
        near = grams is not None
        chunk_keys = row_keys(rows, source_rows, keep_prompts=near, dedup=dedup, overlap=hash_prompts)
        if grams is not None:  # the prompts' n-grams go to disk, their counts stay
            chunk_keys = chunk_keys.with_columns(grams.add(source.spec.name, source_rows, chunk_keys["prompt"]))
            chunk_keys = chunk_keys.drop("prompt")
        keys.append(chunk_keys)
        source_rows += rows.height
        if folder is not None and rows.height:
            waiting.append(slim(rows) if shared is not None else rows)
            waiting_bytes += waiting[-1].estimated_size()
            if waiting_bytes >= MIN_PART_BYTES:
                write_parts(folder)
        last = rows
        chunk.rows = chunk.rows.clear()
    if waiting and folder is not None:
        write_parts(folder)
    if not parts and last is not None and folder is not None:
        parts.append(folder / f"{tag}-00000.arrow")
        starts.append(0)
        (slim(last) if shared is not None else last).clear().write_ipc(parts[-1], compression="uncompressed")
    all_keys = pl.concat(keys)
    if ids:
        all_keys = all_keys.with_columns(unique_ids(pl.concat(ids)))
    by_position = known_hits
    if hits:
        by_position = pl.concat(hits).with_columns(pl.col("id").cast(pl.UInt32).alias("__pos")).drop("id")
    found = None
    if by_position is not None:
        found = (
            by_position.join(all_keys.select("__pos", "id"), on="__pos")
            .select("__pos", "id", "benchmark", "item", "span")
            .sort("id", "benchmark")
        )
    return Staged(source, parts, starts, all_keys, counts, pl.concat(rejects) if rejects else None, found, shared)
