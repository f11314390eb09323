"""Decontamination: word n-gram overlap (and exact prompt match) between training rows and benchmark items.

Exact by construction: the hash of every n-gram of every message that passes a screen (`ngrams.Screen`, which
lets through every text sharing an n-gram with an item and few others) is looked up in the set of every
benchmark item's n-gram hashes (`mixer.ngrams`), so nothing is missed (a 64-bit hash collision can only add a
false hit, which the reported span lets a reader check). Normalisation follows GPT-3's audit: lowercase, punctuation
stripped, whitespace collapsed; n = 13 by default. Items shorter than n words are matched by whole-prompt
equality only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from mixer import hits_cache, ngrams
from mixer.adapters.base import content_text, first_content
from mixer.benchmark_sets import KNOWN
from mixer.errors import MixerError
from mixer.io import read_table
from mixer.recipe import BenchmarkSpec, DecontamSpec

if TYPE_CHECKING:
    from mixer.benchmark_sets import ResolvedBenchmark
    from mixer.resolve import ResolvedSource
    from mixer.stage import Staged

EXAMPLES = 3
HIT_SCHEMA = {"id": pl.String, "benchmark": pl.String, "item": pl.String, "span": pl.String}


@dataclass
class Hit:
    source: str
    benchmark: str
    rows: int
    examples: list[dict[str, Any]] = field(default_factory=list)


def normalise(text: pl.Expr) -> pl.Expr:
    """Lowercase, punctuation stripped, whitespace collapsed: the text that whole prompts are compared by."""
    return ngrams.spaced(text).str.replace_all(" {2,}", " ").str.strip_chars()


def benchmark_items(spec: BenchmarkSpec, path: Path) -> pl.DataFrame:
    """(item, text) with normalised text for one benchmark file."""
    known = KNOWN.get(spec.name)
    fields = spec.fields or (known.fields if known else ())
    table = read_table(path).frame
    missing = [f for f in fields if f not in table.columns]
    if not fields or missing:
        raise MixerError(
            f"benchmark {spec.name}: {path} has no field {', '.join(missing) or '(none given)'}",
            f"name the prompt field: {{name: {spec.name}, path: ..., fields: [<one of {', '.join(table.columns)}>]}}",
        )
    text = pl.concat_str([pl.col(f).cast(pl.String).fill_null("") for f in fields], separator="\n")
    return table.select(
        (pl.lit(f"{spec.name}/") + pl.col("__row").cast(pl.String)).alias("item"), normalise(text).alias("text")
    )


def row_text(rows: pl.DataFrame) -> pl.Expr:
    columns = [c for c in ("messages", "prompt", "chosen", "rejected") if c in rows.columns]
    return pl.concat_str([content_text(pl.col(c)) for c in columns], separator="\n")


def first_turn(rows: pl.DataFrame) -> pl.Expr:
    """The content of each row's first user turn, as written."""
    return first_content(pl.col("messages" if "messages" in rows.columns else "prompt"), "user")


def first_prompt(rows: pl.DataFrame) -> pl.Expr:
    return normalise(first_turn(rows))


class Index:
    """The n-grams and whole prompts of every benchmark item, ready to join against training rows."""

    def __init__(self, items: dict[str, pl.DataFrame], n: int) -> None:
        self.n = n
        frames = [df.with_columns(pl.lit(name).alias("benchmark")) for name, df in items.items()]
        all_items = (
            pl.concat(frames)
            if frames
            else pl.DataFrame(schema={"item": pl.String, "text": pl.String, "benchmark": pl.String})
        )
        self.items = all_items
        words = ngrams.words(all_items["text"])
        first, grams = words.windows(n)
        self.grams = (
            pl.DataFrame({"g": grams, "row": words.row[first]})
            .join(all_items.select("item", "benchmark").with_row_index("row").cast({"row": pl.Int64}), on="row")
            .select("g", "benchmark", "item")
            .unique(["g", "benchmark"], keep="first", maintain_order=True)
        )
        self.gram_set = ngrams.HashSet(self.grams["g"].to_numpy())
        self.screen = ngrams.Screen(all_items["text"], n)
        # A prompt equal to an item of n words or more shares its n-grams, and n-gram hits are reported first,
        # so only shorter items need whole-prompt matching.
        short = all_items.filter(pl.col("text").str.count_matches(" ") + 1 < n)
        self.exact = short.select(pl.col("text").alias("prompt"), "benchmark", "item").unique(
            ["prompt", "benchmark"], keep="first", maintain_order=True
        )
        self.short_items = short.height

    def hits(self, rows: pl.DataFrame) -> pl.DataFrame:
        """(id, benchmark, item, span) for every contaminated row: the longest run of matching n-grams."""
        texts = rows.select(row_text(rows)).to_series()
        found = []
        for offset, batch in ngrams.batches(texts):
            maybe = pl.Series(self.screen.candidates(batch), dtype=pl.Int64)
            if len(maybe):
                found.append(self._gram_hits(rows["id"].slice(offset, len(batch)).gather(maybe), batch.gather(maybe)))
        if self.exact.height:
            found.append(
                rows.select("id", first_prompt(rows).alias("prompt"))
                .join(self.exact, on="prompt")
                .select("id", "benchmark", "item", pl.col("prompt").alias("span"))
            )
        return (
            pl.concat([pl.DataFrame(schema=HIT_SCHEMA), *found])
            .unique(["id", "benchmark"], keep="first", maintain_order=True)
            .sort("id", "benchmark")
        )

    def _gram_hits(self, ids: pl.Series, texts: pl.Series) -> pl.DataFrame:
        """Per (row, benchmark), the longest run of consecutive matching windows, as the words it covers."""
        words = ngrams.words(texts)
        first, grams = words.windows(self.n)
        hit = self.gram_set.contains(grams)
        if not hit.any():
            return pl.DataFrame(schema=HIT_SCHEMA)
        matched = pl.DataFrame({"start": first[hit], "g": grams[hit]}).join(self.grams, on="g")
        runs = (
            matched.with_columns(pl.Series("row", words.row[matched["start"].to_numpy()]))
            .sort("row", "benchmark", "start")
            .with_columns((pl.col("start") - pl.int_range(pl.len()).over("row", "benchmark")).alias("run"))
            .group_by("row", "benchmark", "run")
            .agg(pl.col("start").min().alias("first"), pl.col("start").max().alias("last"), pl.col("item").first())
            .sort("row", "benchmark", pl.col("last") - pl.col("first"), "first", descending=[False, False, True, False])
            .unique(["row", "benchmark"], keep="first", maintain_order=True)
        )
        spans = [words.phrase(first, last - first + self.n) for first, last in runs.select("first", "last").iter_rows()]
        return runs.select(
            ids.gather(runs["row"]).alias("id"), "benchmark", "item", pl.Series("span", spans, dtype=pl.String)
        )


def hit_summary(source: str, hits: pl.DataFrame, benchmarks: list[str]) -> list[Hit]:
    """Rows hit and the first examples, per benchmark, for one source's hits (sorted by id)."""
    summary = []
    for benchmark in benchmarks:
        mine = hits.filter(pl.col("benchmark") == benchmark)
        summary.append(
            Hit(source, benchmark, mine["id"].n_unique(), mine.head(EXAMPLES).select("id", "item", "span").to_dicts())
        )
    return summary


class Decontamination:
    """One build's decontamination: the benchmark index, and the hits of every pool it was applied to."""

    def __init__(self, spec: DecontamSpec, benchmarks: list[ResolvedBenchmark], cache_dir: Path | None = None) -> None:
        """With a `cache_dir`, each source's hits are remembered and reused while nothing they depend on
        changes (`mixer.hits_cache`)."""
        self.spec = spec
        self.cache_dir = cache_dir
        items = {}
        self.files = []
        self._benchmarks = []  # what the hits depend on, for the cache key
        for bench in benchmarks:
            items[bench.name] = benchmark_items(bench.spec, bench.file.path)
            self.files.append(
                {"benchmark": bench.name, "path": bench.file.label, "items": items[bench.name].height}
                | ({"revision": bench.revision} if bench.revision else {})
            )
            self._benchmarks.append(
                {"name": bench.name, "fields": list(bench.spec.fields), "sha256": bench.file.sha256}
            )
        self.index = Index(items, spec.n)
        self.hits: list[Hit] = []

    def known_hits(self, source: ResolvedSource, drop_patterns: tuple[str, ...]) -> pl.DataFrame | None:
        """A source's hits by position from an earlier build, or None when they must be found."""
        if self.cache_dir is None or not source.files:
            return None
        return hits_cache.load(self.cache_dir, self._key(source, drop_patterns))

    def remember_hits(self, source: ResolvedSource, drop_patterns: tuple[str, ...], hits: pl.DataFrame | None) -> None:
        """Only file-backed sources are remembered: evolved rows have no input file whose hash could stand for
        them (and are few, so scanning them again is cheap)."""
        if self.cache_dir is not None and source.files:
            hits_cache.save(self.cache_dir, self._key(source, drop_patterns), hits)

    def _key(self, source: ResolvedSource, drop_patterns: tuple[str, ...]) -> str:
        return hits_cache.hits_key(source, drop_patterns, self._benchmarks, self.spec.n)

    def settle(self, staged: Staged) -> None:
        """Record a staged source's hits (found while it was staged) and, in remove mode, drop those rows."""
        hits = staged.hits if staged.hits is not None else pl.DataFrame(schema=HIT_SCHEMA)
        self.hits += hit_summary(staged.name, hits, sorted(self.index.items["benchmark"].unique()))
        if self.spec.mode == "remove":
            staged.drop("decontaminate", ~pl.col("id").is_in(hits["id"].unique().implode()))

    def report(self, counts: list[dict[str, int]]) -> dict[str, Any]:
        """The hits so far and the rows removed, given each source's counts."""
        return {
            "n": self.spec.n,
            "mode": self.spec.mode,
            "benchmarks": self.files,
            "short_items_exact_only": self.index.short_items,
            "hits": [
                {"source": h.source, "benchmark": h.benchmark, "rows": h.rows, "examples": h.examples}
                for h in self.hits
            ],
            "removed": sum(c.get("decontaminate", 0) for c in counts),
        }
