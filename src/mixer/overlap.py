"""Overlap between the sources of one mix: rows whose normalised first prompt occurs in more than one source
(Open-Orca is FLAN again, CoT is FLAN again: open-instruct #91). Reported as a source x source matrix.

A build measures it on the mixture it wrote; `mixer decontam` on every available row of every source."""

from __future__ import annotations

from typing import Any

import polars as pl

from mixer.decontam import first_prompt

EXAMPLES = 3


def overlap_matrix(rows: pl.DataFrame, names: list[str]) -> dict[str, Any]:
    """matrix[a][b] = distinct rows of source a whose prompt also occurs in source b (exact, after
    normalisation). `rows` are canonical rows (dataset, id, messages): a mixture or all available rows."""
    distinct = rows.unique(["dataset", "id"], keep="first")
    keys = distinct.select(pl.col("dataset").alias("source"), "id", first_prompt(distinct).alias("prompt")).filter(
        pl.col("prompt").is_not_null() & (pl.col("prompt") != "")
    )
    shared = (
        keys.group_by("prompt").agg(pl.col("source").unique().alias("sources")).filter(pl.col("sources").list.len() > 1)
    )
    pairs = (
        keys.join(shared, on="prompt")
        .explode("sources")
        .filter(pl.col("source") != pl.col("sources"))
        .rename({"sources": "other"})
    )
    counts = {(a, b): n for a, b, n in pairs.group_by("source", "other").agg(pl.col("id").n_unique()).iter_rows()}
    examples = [
        {
            "a": a,
            "b": b,
            "prompts": pairs.filter((pl.col("source") == a) & (pl.col("other") == b))["prompt"]
            .unique()
            .sort()
            .head(EXAMPLES)
            .to_list(),
        }
        for a, b in sorted(counts)
        if a < b
    ]
    return {
        "sources": names,
        "matrix": [[counts.get((a, b), 0) if a != b else None for b in names] for a in names],
        "rows_in_several_sources": {name: pairs.filter(pl.col("source") == name)["id"].n_unique() for name in names},
        "examples": examples,
    }
