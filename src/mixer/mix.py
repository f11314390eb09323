"""Mixing decisions on row keys: cross-source dedup, exact-count selection by stable hash, the output order.

Selection ranks a source's rows by hash(seed, source name, row id) and takes the first N, so the rows a
source contributes depend only on that source: adding or removing another source never changes them
(cross-source dedup aside, which is documented). Upsampling repeats every row `floor(f)` times and adds the
first `round(frac(f)·n)` rows of the same ranking once more. The shuffle sorts by hash(seed, id, repeat).

Everything here works on a few columns per row (ids, hashes, positions), never on whole rows: the rows wait
on disk (mixer.stage) until the shard writer (mixer.assemble) reads them in output order.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import polars as pl

from mixer.hashing import stable_hash

if TYPE_CHECKING:
    from mixer.load import Pool
    from mixer.stage import Staged


# Unicode White_Space (what the regex `\s` matches) besides the space: the ASCII ones and the others (`_spaced`)
ASCII_WHITESPACE = ["\t", "\n", "\x0b", "\x0c", "\r"]
ASCII_WHITESPACE_CLASS = "[" + "".join(f"\\x{ord(c):02x}" for c in ASCII_WHITESPACE) + "]"  # one regex byte class
OTHER_WHITESPACE = ["\x85", "\xa0", "\u1680", *map(chr, range(0x2000, 0x200B)), "\u2028", "\u2029", "\u202f"]
OTHER_WHITESPACE += ["\u205f", "\u3000"]


def normalised_text(rows: pl.DataFrame) -> pl.Series:
    """Role-tagged, lower-cased, whitespace-collapsed text of each row's `messages`: the identity exact dedup uses.

    Every White_Space character becomes a space, then runs of spaces one (`\\s+` does both in one step, but 4x
    slower than a multi-pattern replace on long conversations). Each step is a frame's select, which polars
    spreads over both cores (a Series method runs on one)."""
    turns = pl.col("messages").list.eval(
        pl.concat_str([pl.element().struct.field("role"), pl.lit(": "), pl.element().struct.field("content")])
    )
    text = rows.select(turns.list.join("\n").str.to_lowercase())
    return _spaced(text).select(pl.all().str.replace_all(" {2,}", " ").str.strip_chars()).to_series()


def _spaced(text: pl.DataFrame) -> pl.DataFrame:
    """`text` (one column) with every White_Space character as a space. Replacing all 24 with one multi-pattern
    replace was 1.3 s of the 2.5 s that this text cost a 1M-row build here. A regex of the 5 ASCII ones, one
    byte class, takes a fifth of that, and the others can only be in a text with more bytes than characters:
    they are replaced in those texts alone, or, when those are most of them, all 24 in every text as before."""
    beyond_ascii = text.select(pl.all().str.len_bytes() != pl.all().str.len_chars()).to_series()
    count = beyond_ascii.sum()
    if count > text.height // 2:
        every = ASCII_WHITESPACE + OTHER_WHITESPACE
        return text.select(pl.all().str.replace_many(every, [" "] * len(every)))
    text = text.select(pl.all().str.replace_all(ASCII_WHITESPACE_CLASS, " "))
    if count == 0:
        return text
    rows = beyond_ascii.arg_true()
    others = pl.all().str.replace_many(OTHER_WHITESPACE, [" "] * len(OTHER_WHITESPACE))
    return text.to_series().scatter(rows, text[rows].select(others).to_series()).to_frame()


def marked(length: int, positions: pl.Series) -> pl.Series:
    """A boolean mask of `length` rows, true at `positions`."""
    return pl.repeat(False, length, eager=True).scatter(positions, True)


class Deduplicator:
    """Exact dedup across sources, one source at a time: a row is dropped when its normalised text appeared
    earlier, in an earlier source or earlier in its own file. Texts are compared by their two 64-bit hashes
    (mixer.stage), so only 16 bytes per row are remembered."""

    def __init__(self) -> None:
        self.seen = pl.DataFrame(schema={"h1": pl.UInt64, "h2": pl.UInt64})

    def drop_seen(self, staged: Staged, remember: bool = True) -> None:
        """Drop the source's rows seen before; remember the rest unless `remember` is false: a source that adds
        no row to the mixture (`take: 0`, an evolve block's seeds) must not take rows from the sources after it."""
        hashes = staged.keys.select("h1", "h2")
        if hashes["h1"].null_count() == hashes.height:  # preference rows: no conversation to compare
            staged.counts.setdefault("dedup", 0)
            return
        first = hashes.with_row_index("__i").unique(["h1", "h2"], keep="first")
        # the remembered rows that might match, found on one hash (a set of this source's, no table of all the
        # rows seen: an anti join against those took ~1.2 GB more at 10M rows), then compared on both
        maybe_seen = self.seen.filter(pl.col("h1").is_in(first["h1"].implode()))
        fresh = first.join(maybe_seen, on=["h1", "h2"], how="anti")["__i"]
        keep = marked(hashes.height, fresh)
        staged.drop("dedup", keep)
        if remember:
            self.seen = pl.concat([self.seen, hashes.filter(keep)])


def near_dedup(staged: list[Staged], pairs: pl.DataFrame, silent: frozenset[int] = frozenset()) -> None:
    """Drop rows whose first prompt is a near duplicate of an earlier row's (earlier source, then file order),
    counted per source as `dedup_near`. `pairs`: (row, row_b) labels (`gram_store.label`, in `staged`'s order).
    The rows of `silent` sources (indices into `staged`: sources that add no row to the mixture) take none from
    later sources: an evolve block's rewrites are near duplicates of the seeds they came from."""
    from mixer.gram_store import source_and_position

    earlier, _ = source_and_position(pl.col("row"))
    pairs = pairs.filter(~earlier.is_in(list(silent))) if silent else pairs
    source, position = source_and_position(pl.col("row_b"))
    later = pairs.select(source.alias("source"), position.alias("__pos")).unique()
    for index, s in enumerate(staged):
        s.drop("dedup_near", ~pl.col("__pos").is_in(later.filter(pl.col("source") == index)["__pos"].implode()))


def upsample_count(available: int, fraction: float) -> int:
    whole = math.floor(fraction)
    return whole * available + math.floor((fraction - whole) * available + 0.5)


def select_keys(ids: pl.Series, count: int, seed: int, source: str) -> pl.DataFrame:
    """(__index into `ids`, __repeat) of `count` rows in selection order: the ranking repeated whole
    `count // len(ids)` times, then its first `count % len(ids)` rows once more."""
    available = ids.len()
    ranked = (
        pl.DataFrame({"__index": pl.int_range(available, dtype=pl.UInt32, eager=True), "id": ids})
        .with_columns(stable_hash(ids, f"{seed}\x1fselect\x1f{source}").alias("__key"))
        .sort("__key", "id")
        .select("__index")
    )
    whole, remainder = divmod(count, available) if available else (0, 0)
    parts = [ranked.with_columns(pl.lit(r, dtype=pl.Int32).alias("__repeat")) for r in range(whole)]
    parts.append(ranked.head(remainder).with_columns(pl.lit(whole, dtype=pl.Int32).alias("__repeat")))
    return pl.concat(parts)


def with_repeat(rows: pl.DataFrame) -> pl.DataFrame:
    """Record each row's `__repeat` in its meta, where the written mixture keeps it."""
    return rows.with_columns(pl.col("meta").struct.with_fields(repeat=pl.col("__repeat")))


def select_rows(pool: Pool, count: int, seed: int) -> pl.DataFrame:
    """`count` rows of an in-memory pool in selection order, with `__repeat` (count may exceed the pool)."""
    chosen = select_keys(pool.rows["id"], count, seed, pool.name)
    return with_repeat(pool.rows.drop("__order").gather(chosen["__index"]).with_columns(chosen["__repeat"]))


def order_keys(selected: pl.DataFrame, seed: int, shuffle: bool, offset: int) -> pl.Series:
    """Sort keys of selected rows (`id`, `__repeat`): with shuffle, hash(seed, id, repeat), ties broken by id
    then repeat; without, the running position (`offset` = rows of the sources before this one)."""
    if not shuffle:
        return pl.int_range(offset, offset + selected.height, dtype=pl.UInt64, eager=True).alias("__sort")
    tag = selected.select(pl.concat_str([pl.col("id"), pl.lit("\x1f"), pl.col("__repeat").cast(pl.String)]))
    return stable_hash(tag.to_series(), f"{seed}\x1fshuffle").alias("__sort")
