"""Mixing: cross-source exact dedup, exact-count selection by stable hash, upsampling, global shuffle.

Selection ranks a source's rows by hash(seed, source name, row id) and takes the first N, so the rows a
source contributes depend only on that source: adding or removing another source never changes them
(cross-source dedup aside, which is documented). Upsampling repeats every row `floor(f)` times and adds the
first `round(frac(f)·n)` rows of the same ranking once more. The shuffle sorts by hash(seed, id, repeat).
"""

from __future__ import annotations

import math

import polars as pl

from mixer.hashing import stable_hash
from mixer.load import Pool


def normalised_text(messages: pl.Expr) -> pl.Expr:
    """Role-tagged, lower-cased, whitespace-collapsed conversation text: the identity exact dedup uses."""
    turns = messages.list.eval(
        pl.concat_str([pl.element().struct.field("role"), pl.lit(": "), pl.element().struct.field("content")])
    ).list.join("\n")
    return turns.str.to_lowercase().str.replace_all(r"\s+", " ").str.strip_chars()


def dedup_pools(pools: list[Pool]) -> None:
    """Drop rows whose normalised text appeared earlier: earlier pool in the list first, then file order.
    Counts add up, so evolved pools can be deduplicated against already-deduplicated pools in a second pass."""
    keys = pl.concat(
        [
            p.rows.select(normalised_text(pl.col("messages")).alias("key"), pl.lit(i).alias("pool"), "__order")
            for i, p in enumerate(pools)
        ]
    ).with_row_index("__global")
    first = keys.select(pl.col("key").is_first_distinct().alias("keep"), "pool")
    for i, pool in enumerate(pools):
        keep = first.filter(pl.col("pool") == i)["keep"]
        before = pool.rows.height
        pool.rows = pool.rows.filter(keep)
        pool.counts["dedup"] = pool.counts.get("dedup", 0) + before - pool.rows.height


def near_dedup_pools(pools: list[Pool]) -> None:
    """Drop rows whose first prompt is a near duplicate of an earlier row's (earlier pool, then file order),
    counted per source as `dedup_near`. Run after exact dedup."""
    from mixer.decontam import first_prompt
    from mixer.overlap import near_pairs

    prompts = pl.concat(
        [
            p.rows.select(first_prompt(p.rows).fill_null("").alias("prompt"), pl.lit(i).alias("pool"))
            for i, p in enumerate(pools)
        ]
    )
    later = near_pairs(prompts["prompt"])["row_b"].unique()
    drop = pl.Series("drop", [False] * prompts.height).scatter(later, True) if later.len() else None
    offset = 0
    for pool in pools:
        height = pool.rows.height
        if drop is not None:
            pool.rows = pool.rows.filter(~drop.slice(offset, height))
        pool.counts["dedup_near"] = pool.counts.get("dedup_near", 0) + height - pool.rows.height
        offset += height


def upsample_count(available: int, fraction: float) -> int:
    whole = math.floor(fraction)
    return whole * available + math.floor((fraction - whole) * available + 0.5)


def select_rows(pool: Pool, count: int, seed: int) -> pl.DataFrame:
    """`count` rows of the pool (count may exceed the pool: whole repeats, then a hash-ranked remainder)."""
    available = pool.rows.height
    ranked = pool.rows.with_columns(stable_hash(pool.rows["id"], f"{seed}\x1fselect\x1f{pool.name}").alias("__key"))
    ranked = ranked.sort("__key", "id")
    whole, remainder = divmod(count, available) if available else (0, 0)
    parts = [ranked.with_columns(pl.lit(r, dtype=pl.Int32).alias("__repeat")) for r in range(whole)]
    parts.append(ranked.head(remainder).with_columns(pl.lit(whole, dtype=pl.Int32).alias("__repeat")))
    chosen = pl.concat(parts)
    return chosen.with_columns(pl.col("meta").struct.with_fields(repeat=pl.col("__repeat")))


def shuffle_rows(rows: pl.DataFrame, seed: int) -> pl.DataFrame:
    tag = pl.concat_str([pl.col("id"), pl.lit("\x1f"), pl.col("__repeat").cast(pl.String)])
    keys = stable_hash(rows.select(tag.alias("tag"))["tag"], f"{seed}\x1fshuffle")
    return rows.with_columns(keys.alias("__shuffle")).sort("__shuffle", "id", "__repeat")


def mix(pools: list[Pool], counts: dict[str, int], seed: int, shuffle: bool) -> pl.DataFrame:
    """The final mixture in output order, canonical columns only (messages, or prompt/chosen/rejected).

    Each pool's rows are released as soon as its selection is taken (only its counts and rejects remain), so
    the build never holds every input row and the whole mixture at once."""
    selected = []
    for pool in pools:
        selected.append(select_rows(pool, counts[pool.name], seed))
        pool.rows = pool.rows.clear()
    rows = pl.concat(selected)
    del selected
    rows = shuffle_rows(rows, seed) if shuffle else rows
    return rows.select(c for c in rows.columns if not c.startswith("__"))
