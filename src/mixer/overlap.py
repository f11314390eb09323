"""Overlap between the sources of one mix: rows whose normalised first prompt occurs in more than one source
(Open-Orca is FLAN again, CoT is FLAN again: open-instruct #91). Reported as a source x source matrix.

Near duplicates are pairs of prompts whose sets of word 5-grams have a Jaccard similarity of at least 0.8,
found exactly from their 5-gram hashes (see `near_pairs`). 5-grams that occur in more than 100 prompts are
boilerplate ("what is the capital of") and do not make pairs on their own; they still count in each prompt's
size, so such pairs can only be missed, never invented.

A build measures it on the rows it selected; `mixer decontam` on every available row of every source."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import polars as pl

from mixer import ngrams

EXAMPLES = 3
NEAR_N = 5
NEAR_THRESHOLD = 0.8
BOILERPLATE_ROWS = 100


def near_pairs(prompts: pl.Series, n: int = NEAR_N, threshold: float = NEAR_THRESHOLD) -> pl.DataFrame:
    """(row, row_b) positions in `prompts` (normalised), row < row_b, that are near duplicates: `shared` /
    (`size` + `size_b` - `shared`) >= threshold, where size counts a prompt's distinct n-grams and shared the
    non-boilerplate ones two prompts have in common. All in memory: `mixer.gram_store` does the same search
    with the n-grams on disk."""
    row, gram = distinct_grams(prompts, n)
    counts = np.bincount(row, minlength=len(prompts))
    present = np.flatnonzero(counts)
    return pairs_sharing(shareable(row, gram), pl.DataFrame({"row": present, "size": counts[present]}), threshold)


def pairs_sharing(held: pl.DataFrame, sizes: pl.DataFrame, threshold: float = NEAR_THRESHOLD) -> pl.DataFrame:
    """The near-duplicate pairs (row, row_b), row < row_b, given every shareable n-gram (`shareable`: row, g,
    df) and every prompt's count of distinct n-grams (row, size). Rows are any increasing labels.

    Exact, without joining every shared n-gram with every other (at 1M prompts that took ~23 s and 5 GB):
    a passing pair shares at least m = floor(threshold * size) n-grams of each prompt's (`size_b` >= shared),
    so with every prompt's n-grams ordered the same way (those in one prompt only, then by how many prompts
    hold them, then by hash) the first `shareable - m + 1` of each prompt's shareable ones must contain a
    common one (prefix filtering). Only pairs found that way are counted in full. The steps are separate
    functions so that `GramStore` can run each over its n-grams a group of partitions at a time."""
    limits = prefix_limits(held.group_by("row").agg(pl.len().alias("count")), sizes, threshold)
    candidates = candidate_pairs(prefixes(held.join(limits, on="row")))
    return passing_pairs(shared_counts(candidates, candidate_rows(candidates), held), sizes, threshold)


def prefix_limits(counts: pl.DataFrame, sizes: pl.DataFrame, threshold: float) -> pl.DataFrame:
    """(row, limit): how many of a row's shareable n-grams (`counts`: row, count) its prefix holds, for the rows
    whose prefix is not empty (the others hold too few shareable n-grams to pass)."""
    floor_share = (pl.col("size") * threshold).floor().cast(pl.Int64) - 1  # minus 1: room for float rounding
    limit = pl.col("count") - pl.max_horizontal(floor_share, 0) + 1
    return counts.join(sizes, on="row").select("row", limit.alias("limit")).filter(pl.col("limit") >= 1)


def prefixes(held: pl.DataFrame) -> pl.DataFrame:
    """The first `limit` n-grams of each row (held: row, g, df, limit) in the shared order (df, then hash).
    Prefixes of parts of the n-grams, put together, give the same as one call on all of them."""
    ranked = held.sort("row", "df", "g").with_columns(pl.int_range(1, pl.len() + 1).over("row").alias("rank"))
    return ranked.filter(pl.col("rank") <= pl.col("limit")).drop("rank")


def candidate_pairs(prefix: pl.DataFrame, pieces: int = 8) -> pl.DataFrame:
    """(row, row_b), row < row_b, of the rows whose prefixes share an n-gram. Joined a range of hashes at a
    time: one join of 11M prefix n-grams with themselves (10M rows) was the near search's peak."""
    prefix = prefix.select("row", "g", (pl.col("g") // ((1 << 64) // pieces)).alias("piece"))
    found = [
        part.join(part.rename({"row": "row_b"}), on="g")
        .filter(pl.col("row") < pl.col("row_b"))
        .select("row", "row_b")
        .unique()
        for part in prefix.partition_by("piece", include_key=False)
    ]
    return pl.concat(found).unique() if found else pl.DataFrame(schema={"row": pl.Int64, "row_b": pl.Int64})


def candidate_rows(candidates: pl.DataFrame) -> pl.Series:
    """Every row of some candidate pair, as `shared_counts` takes them."""
    return pl.concat([candidates["row"], candidates["row_b"]]).unique().implode()


def shared_counts(candidates: pl.DataFrame, rows: pl.Series, held: pl.DataFrame) -> pl.DataFrame:
    """(row, row_b, shared): the shareable n-grams each candidate pair has in common among `held`'s (for held
    split by n-gram, the counts of the parts add up). `rows`: `candidate_rows(candidates)`, made once for
    all the parts."""
    rows_grams = held.select("row", "g").filter(pl.col("row").is_in(rows))
    return (
        candidates.join(rows_grams, on="row")
        .join(rows_grams.rename({"row": "row_b"}), on=["row_b", "g"])
        .group_by("row", "row_b")
        .agg(pl.len().cast(pl.Int64).alias("shared"))
    )


def passing_pairs(shared: pl.DataFrame, sizes: pl.DataFrame, threshold: float) -> pl.DataFrame:
    """The candidate pairs whose similarity reaches `threshold`, sorted."""
    return (
        shared.join(sizes, on="row")
        .join(sizes.rename({"row": "row_b", "size": "size_b"}), on="row_b")
        .filter(pl.col("shared") / (pl.col("size") + pl.col("size_b") - pl.col("shared")) >= threshold)
        .select("row", "row_b")
        .sort("row", "row_b")
    )


def distinct_grams(prompts: pl.Series, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, hash) of each prompt's distinct word n-grams, by row."""
    rows, hashes = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.uint64)]
    for offset, batch in ngrams.batches(prompts):
        words = ngrams.words(batch)
        first, gram = words.windows(n)
        row = words.row[first]
        keep = _first_of_each(row, gram)
        rows.append(row[keep] + offset)
        hashes.append(gram[keep])
    return np.concatenate(rows), np.concatenate(hashes)


def _first_of_each(row: np.ndarray, gram: np.ndarray) -> np.ndarray:
    """A mask keeping one of each (row, gram) pair. A repeated n-gram within a prompt is rare, so the pairs are
    sorted by one 64-bit key (the row in the high bits, the hash's top bits below it: ~10x cheaper than a
    two-key sort) and only those whose key repeats are compared in full."""
    keep = np.ones(len(gram), dtype=bool)
    if len(gram) < 2:
        return keep
    row_bits = max(int(row.max()).bit_length(), 1)
    key = (row.astype(np.uint64) << np.uint64(64 - row_bits)) | (gram >> np.uint64(row_bits))
    ordered = np.sort(key)
    repeated = ordered[1:][ordered[1:] == ordered[:-1]]
    if len(repeated):
        suspects = np.flatnonzero(np.isin(key, repeated))
        order = suspects[np.lexsort((gram[suspects], row[suspects]))]
        again = (row[order][1:] == row[order][:-1]) & (gram[order][1:] == gram[order][:-1])
        keep[order[1:][again]] = False
    return keep


def shareable(row: np.ndarray, gram: np.ndarray) -> pl.DataFrame:
    """(row, g, df) for the n-grams held by 2 to BOILERPLATE_ROWS prompts: the only ones two prompts can share
    and that count. One sort by hash puts each n-gram's prompts together (polars sorts on both cores)."""
    by_gram = pl.DataFrame({"row": row, "g": gram}).sort("g")
    ordered = by_gram["g"].to_numpy()
    new = np.ones(len(ordered), dtype=bool)
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    held_by = np.diff(np.append(starts, len(ordered)))
    per_row = np.repeat(held_by, held_by)
    pick = np.flatnonzero((per_row >= 2) & (per_row <= BOILERPLATE_ROWS))
    return by_gram[pick].with_columns(pl.Series("df", per_row[pick]))


def overlap_matrix(
    keys: dict[str, pl.DataFrame],
    prompt_text: Callable[[str, pl.Series], list[str]],
    near: pl.DataFrame | None = None,
) -> dict[str, Any]:
    """matrix[a][b] = distinct rows of source a whose normalised prompt also occurs in source b (exact); given
    the `near` pairs (`GramStore.near_pairs`, sources in `keys`' order), near_matrix[a][b] likewise for near
    duplicates (several seconds per million prompts, so builds leave it to `mixer decontam`). `keys[source]`
    holds each distinct row once: (__pos = its position in the source, prompt_hash). Prompts are compared by
    hash: first each source's distinct hashes, to find the few found in several sources, then only the rows with
    those. `prompt_text(source, positions)` reads the examples back: the first rows of source a, in file order,
    that b shares."""
    names = list(keys)
    distinct = [frame.select(pl.col("prompt_hash").drop_nulls().unique()) for frame in keys.values()]
    hashes = pl.concat(distinct)["prompt_hash"] if distinct else pl.Series("prompt_hash", [], dtype=pl.UInt64)
    ordered = hashes.sort()  # a value in several sources sits next to its copies (a sort: lighter than a hash table)
    several = ordered.filter((ordered == ordered.shift(1)) | (ordered == ordered.shift(-1))).unique().implode()
    sharing = [
        frame.filter(pl.col("prompt_hash").is_in(several)).select(pl.lit(name).alias("source"), "__pos", "prompt_hash")
        for name, frame in keys.items()
    ]
    empty = {"source": pl.String, "__pos": pl.UInt32, "prompt_hash": pl.UInt64}
    shared = pl.concat(sharing) if sharing else pl.DataFrame(schema=empty)
    in_sources = shared.select("prompt_hash", pl.col("source").alias("other")).unique()
    pairs = shared.join(in_sources, on="prompt_hash").filter(pl.col("source") != pl.col("other"))
    counts = {(a, b): n for a, b, n in pairs.group_by("source", "other").agg(pl.col("__pos").n_unique()).iter_rows()}
    quoted: dict[tuple[str, str], list[int]] = {}  # the positions each pair quotes, in order
    for a, b in sorted(counts):
        if a < b:
            first = (
                pairs.filter((pl.col("source") == a) & (pl.col("other") == b))
                .sort("__pos")
                .unique("prompt_hash", keep="first", maintain_order=True)
            )
            quoted[(a, b)] = first["__pos"].head(EXAMPLES).to_list()
    # each source's examples read in one call, whatever the number of its pairs: each read opens files of its own
    texts: dict[str, dict[int, str]] = {}
    for a in sorted({a for a, _ in quoted}):
        positions = sorted({p for (source, _), found in quoted.items() if source == a for p in found})
        texts[a] = dict(zip(positions, prompt_text(a, pl.Series(positions, dtype=pl.UInt32)), strict=True))
    examples = [{"a": a, "b": b, "prompts": [texts[a][p] for p in found]} for (a, b), found in quoted.items()]
    report = {
        "sources": names,
        "matrix": [[counts.get((a, b), 0) if a != b else None for b in names] for a in names],
        "rows_in_several_sources": {name: pairs.filter(pl.col("source") == name)["__pos"].n_unique() for name in names},
        "examples": examples,
    }
    if near is not None:
        report["near"] = {"n": NEAR_N, "threshold": NEAR_THRESHOLD, "matrix": near_matrix(near, names)}
    return report


def near_matrix(near: pl.DataFrame, names: list[str]) -> list[list[int | None]]:
    """matrix[a][b] = distinct rows of source a with a near duplicate in source b, from the pairs' labels."""
    from mixer.gram_store import source_and_position

    source, position = source_and_position(pl.col("row"))
    other, position_b = source_and_position(pl.col("row_b"))
    sides = near.select(
        source.alias("source"), other.alias("other"), position.alias("__pos"), position_b.alias("pos_b")
    ).with_columns(pl.col("source", "other").replace_strict(list(range(len(names))), names, return_dtype=pl.String))
    both_ways = pl.concat(
        [
            sides.select("source", "other", "__pos"),
            sides.select(
                pl.col("other").alias("source"), pl.col("source").alias("other"), pl.col("pos_b").alias("__pos")
            ),
        ]
    ).filter(pl.col("source") != pl.col("other"))
    near_counts = {
        (a, b): n for a, b, n in both_ways.group_by("source", "other").agg(pl.col("__pos").n_unique()).iter_rows()
    }
    return [[near_counts.get((a, b), 0) if a != b else None for b in names] for a in names]


def largest_pairs(overlap: dict[str, Any], count: int = 3) -> list[tuple[str, str, int, int]]:
    """(a, b, rows of a with a prompt of b, rows of b with a prompt of a) of the `count` source pairs of an
    overlap report that share the most, most first (ties in source order)."""
    names, matrix = overlap["sources"], overlap["matrix"]
    pairs = [
        (names[i], names[j], matrix[i][j], matrix[j][i])
        for i in range(len(names))
        for j in range(i + 1, len(names))
        if matrix[i][j] or matrix[j][i]
    ]
    return sorted(pairs, key=lambda pair: -(pair[2] + pair[3]))[:count]
