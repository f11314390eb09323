"""Overlap between the sources of one mix: rows whose normalised first prompt occurs in more than one source
(Open-Orca is FLAN again, CoT is FLAN again: open-instruct #91). Reported as a source x source matrix.

Near duplicates are pairs of prompts whose sets of word 5-grams have a Jaccard similarity of at least 0.8,
found exactly through a join on shared 5-gram hashes. 5-grams that occur in more than 100 prompts are
boilerplate ("what is the capital of") and do not make pairs on their own; they still count in each prompt's
size, so such pairs can only be missed, never invented.

A build measures it on the rows it selected; `mixer decontam` on every available row of every source."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import polars as pl

from mixer import ngrams

EXAMPLES = 3
NEAR_N = 5
NEAR_THRESHOLD = 0.8
BOILERPLATE_ROWS = 100


def near_pairs(prompts: pl.Series, n: int = NEAR_N, threshold: float = NEAR_THRESHOLD) -> pl.DataFrame:
    """(row, row_b) positions in `prompts` (normalised), row < row_b, that are near duplicates."""
    parts = []
    for offset, batch in ngrams.batches(prompts):
        words = ngrams.words(batch)
        first, hashes = words.windows(n)
        parts.append(pl.DataFrame({"row": words.row[first] + offset, "g": hashes}))
    grams = pl.concat(parts).unique() if parts else pl.DataFrame(schema={"row": pl.Int64, "g": pl.UInt64})
    sizes = grams.group_by("row").agg(pl.len().alias("size"))
    rare = grams.group_by("g").agg(pl.len().alias("df")).filter(pl.col("df") <= BOILERPLATE_ROWS).select("g")
    grams = grams.join(rare, on="g")
    shared = (
        grams.join(grams.rename({"row": "row_b"}), on="g")
        .filter(pl.col("row") < pl.col("row_b"))
        .group_by("row", "row_b")
        .agg(pl.len().alias("shared"))
    )
    return (
        shared.join(sizes, on="row")
        .join(sizes.rename({"row": "row_b", "size": "size_b"}), on="row_b")
        .filter(pl.col("shared") / (pl.col("size") + pl.col("size_b") - pl.col("shared")) >= threshold)
        .select("row", "row_b")
        .sort("row", "row_b")
    )


def overlap_matrix(
    keys: dict[str, pl.DataFrame], prompt_text: Callable[[str, pl.Series], list[str]], near: bool = False
) -> dict[str, Any]:
    """matrix[a][b] = distinct rows of source a whose normalised prompt also occurs in source b (exact); with
    `near`, near_matrix[a][b] likewise for near duplicates (several seconds per million prompts, so builds
    leave it to `mixer decontam`). `keys[source]` holds each distinct row once: (__pos = its position in the
    source, prompt_hash, and prompt for `near`). Prompts are compared by hash: first each source's distinct
    hashes, to find the few found in several sources, then only the rows with those. `prompt_text(source,
    positions)` reads the examples back: the first rows of source a, in file order, that b shares."""
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
    examples = []
    for a, b in sorted(counts):
        if a < b:
            first = (
                pairs.filter((pl.col("source") == a) & (pl.col("other") == b))
                .sort("__pos")
                .unique("prompt_hash", keep="first", maintain_order=True)
            )
            examples.append({"a": a, "b": b, "prompts": prompt_text(a, first["__pos"].head(EXAMPLES))})
    report = {
        "sources": names,
        "matrix": [[counts.get((a, b), 0) if a != b else None for b in names] for a in names],
        "rows_in_several_sources": {name: pairs.filter(pl.col("source") == name)["__pos"].n_unique() for name in names},
        "examples": examples,
    }
    if near:
        every_row = pl.concat(
            [
                frame.filter(pl.col("prompt_hash").is_not_null()).select(
                    pl.lit(name).alias("source"), "__pos", "prompt"
                )
                for name, frame in keys.items()
            ]
        )
        report["near"] = {"n": NEAR_N, "threshold": NEAR_THRESHOLD, "matrix": near_matrix(every_row, names)}
    return report


def near_matrix(keys: pl.DataFrame, names: list[str]) -> list[list[int | None]]:
    """matrix[a][b] = distinct rows of source a with a near duplicate in source b; `keys` = (source, __pos, prompt)."""
    near = near_pairs(keys["prompt"])
    labelled = keys.select("source", "__pos").with_row_index("row")
    sides = near.join(labelled, on="row").join(
        labelled.rename({"row": "row_b", "source": "other", "__pos": "pos_b"}), on="row_b"
    )
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
