"""Decontamination: word n-gram overlap (and exact prompt match) between training rows and benchmark items.

Exact by construction: every n-gram of every message is compared with every n-gram of every benchmark
item through a hash join, so nothing is missed (a 64-bit hash collision can only add a false hit, which
the reported span lets a reader check). Normalisation follows GPT-3's audit: lowercase, punctuation
stripped, whitespace collapsed; n = 13 by default. Items shorter than n words are matched by whole-prompt
equality only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from mixer import hits_cache
from mixer.adapters.base import content_text, first_content
from mixer.adapters.formats import SUPPORTED_SUFFIXES
from mixer.errors import MixerError
from mixer.hashing import file_sha256
from mixer.io import read_table
from mixer.recipe import BenchmarkSpec, DecontamSpec

if TYPE_CHECKING:
    from mixer.resolve import ResolvedSource
    from mixer.stage import Staged

# benchmark name -> the field(s) holding what a model is asked
BENCHMARK_FIELDS: dict[str, tuple[str, ...]] = {
    "humaneval": ("prompt",),
    "mbpp": ("text",),
    "gsm8k": ("question",),
    "mmlu": ("question",),
    "bbh": ("input",),
    "alpaca_eval": ("instruction",),
    "ifeval": ("prompt",),
}
CHUNK_ROWS = 20_000  # rows whose n-grams are materialised at once: bounds memory on large pools
EXAMPLES = 3
HIT_SCHEMA = {"id": pl.String, "benchmark": pl.String, "item": pl.String, "span": pl.String}


@dataclass
class Hit:
    source: str
    benchmark: str
    rows: int
    examples: list[dict[str, Any]] = field(default_factory=list)


# Punctuation that normalisation turns into spaces: ASCII, typographic quotes and dashes, and whitespace.
# A fixed list lets polars use one multi-pattern replace (several times faster than a Unicode regex).
PUNCTUATION = [*"!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", "\u2018", "\u2019", "\u201c", "\u201d", "\u2013", "\u2014"]
PUNCTUATION += ["\u2026", "\u00ab", "\u00bb", "\u00bf", "\u00a1", "\n", "\t", "\r", "\u00a0"]
GRAM_BASE = 0x100000001B3  # odd, so the polynomial hash of a window mixes every word


def _spaced(text: pl.Expr) -> pl.Expr:
    return text.str.to_lowercase().str.replace_many(PUNCTUATION, [" "] * len(PUNCTUATION))


def normalise(text: pl.Expr) -> pl.Expr:
    """Lowercase, punctuation stripped, whitespace collapsed: the text that whole prompts are compared by."""
    return _spaced(text).str.replace_all(" {2,}", " ").str.strip_chars()


def words(frame: pl.DataFrame, key: str) -> pl.DataFrame:
    """(key, word, h) per word of the `text` column, in order; `h` is the word's 64-bit hash. Spaces are
    collapsed before splitting, so no empty word is made and then filtered out (~15% of the time here)."""
    spaced = _spaced(pl.col("text")).str.replace_all(" {2,}", " ").str.strip_chars(" ")
    return (
        frame.select(key, spaced.alias("text"))
        .filter(pl.col("text") != "")  # null and empty texts have no words
        .select(key, pl.col("text").str.split(" ").alias("word"))
        .explode("word")
        .with_columns(pl.col("word").hash().alias("h"))
    )


def gram_hashes(table: pl.DataFrame, key: str, n: int) -> pl.DataFrame:
    """(key, start, g) for every window of n consecutive words of one key; `start` indexes `table`.

    g is the polynomial hash sum(h[start + k] * B^(n-1-k)) of the word hashes in wrapping u64 arithmetic,
    built from shifted columns, so no n-gram string is ever materialised. Windows of 2, 4, 8... words are
    built by doubling and n is put together from its binary digits: ~2 log2(n) column passes instead of 2n."""

    def power(k: int) -> pl.Expr:
        return pl.lit(pow(GRAM_BASE, k, 1 << 64), dtype=pl.UInt64)

    frame = table.select(key, pl.col("h").alias("w1")).with_row_index("start")
    width = 1
    while width * 2 <= n:  # w{2k}[s] = w{k}[s] * B^k + w{k}[s + k]
        previous = pl.col(f"w{width}")
        frame = frame.with_columns((previous * power(width) + previous.shift(-width)).alias(f"w{2 * width}"))
        width *= 2
    gram, covered = None, 0
    while width:  # the widest window first, then each smaller one the binary form of n needs
        if n - covered >= width:
            piece = pl.col(f"w{width}").shift(-covered)
            gram = piece if gram is None else gram * power(width) + piece
            covered += width
        width //= 2
    assert gram is not None
    return (
        frame.select(key, "start", gram.alias("g"), (pl.col(key).shift(-(n - 1)) == pl.col(key)).alias("ok"))
        .filter(pl.col("ok"))
        .drop("ok")
    )


def resolve_benchmark(spec: BenchmarkSpec, base_dir: Path, data_dir: Path | None) -> Path:
    if spec.path:
        path = Path(os.path.expanduser(spec.path))
        path = path if path.is_absolute() else base_dir / path
        if path.is_file():
            return path
        raise MixerError(
            f"benchmark {spec.name}: {path} does not exist", "check decontaminate: path (relative to the recipe)"
        )
    folder = data_dir or (Path(os.environ["MIXER_DATA_DIR"]) if os.environ.get("MIXER_DATA_DIR") else None)
    if folder is not None:
        for suffix in SUPPORTED_SUFFIXES:
            candidate = folder / f"{spec.name}{suffix}"
            if candidate.is_file():
                return candidate
    raise MixerError(
        f"benchmark {spec.name!r}: no local file",
        f"give decontaminate: [{{name: {spec.name}, path: <file>}}] or put {spec.name}.jsonl in --data-dir",
    )


def benchmark_items(spec: BenchmarkSpec, path: Path) -> pl.DataFrame:
    """(item, text) with normalised text for one benchmark file."""
    fields = spec.fields or BENCHMARK_FIELDS.get(spec.name, ())
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


def first_prompt(rows: pl.DataFrame) -> pl.Expr:
    column = "messages" if "messages" in rows.columns else "prompt"
    return normalise(first_content(pl.col(column), "user"))


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
        grams = gram_hashes(words(all_items.select("item", "text"), "item"), "item", n)
        self.grams = (
            grams.join(all_items.select("item", "benchmark"), on="item")
            .select("g", "benchmark", "item")
            .unique(["g", "benchmark"], keep="first", maintain_order=True)
        )
        self.exact = all_items.select(pl.col("text").alias("prompt"), "benchmark", "item").unique(
            ["prompt", "benchmark"], keep="first", maintain_order=True
        )
        self.short_items = all_items.filter(pl.col("text").str.count_matches(" ") + 1 < n).height

    def hits(self, rows: pl.DataFrame) -> pl.DataFrame:
        """(id, benchmark, item, span) for every contaminated row: the longest run of matching n-grams."""
        found = [
            part
            for offset in range(0, rows.height, CHUNK_ROWS)  # chunks bound the memory of exploded words
            for part in self._chunk_hits(rows.slice(offset, CHUNK_ROWS))
        ]
        if not found:
            return pl.DataFrame(schema=HIT_SCHEMA)
        return pl.concat(found).unique(["id", "benchmark"], keep="first", maintain_order=True).sort("id", "benchmark")

    def _chunk_hits(self, chunk: pl.DataFrame) -> list[pl.DataFrame]:
        found = []
        table = words(chunk.select("id", row_text(chunk).alias("text")), "id")
        matched = gram_hashes(table, "id", self.n).join(self.grams, on="g")
        if matched.height:
            found.append(self._spans(matched, table))
        exact = (
            chunk.select("id", first_prompt(chunk).alias("prompt"))
            .join(self.exact, on="prompt")
            .select("id", "benchmark", "item", pl.col("prompt").alias("span"))
        )
        if exact.height:
            found.append(exact)
        return found

    def _spans(self, matched: pl.DataFrame, table: pl.DataFrame) -> pl.DataFrame:
        """Per (row, benchmark), the longest run of consecutive matching windows, as the words it covers."""
        runs = (
            matched.sort("id", "benchmark", "start")
            .with_columns((pl.col("start") - pl.int_range(pl.len()).over("id", "benchmark")).alias("run"))
            .group_by("id", "benchmark", "run")
            .agg(pl.col("start").min().alias("first"), pl.col("start").max().alias("last"), pl.col("item").first())
            .sort("id", "benchmark", pl.col("last") - pl.col("first"), "first", descending=[False, False, True, False])
            .unique(["id", "benchmark"], keep="first", maintain_order=True)
        )
        words_column = table["word"]
        spans = [
            " ".join(words_column.slice(first, last - first + self.n).to_list())
            for first, last in runs.select("first", "last").iter_rows()
        ]
        return runs.select("id", "benchmark", "item").with_columns(pl.Series("span", spans, dtype=pl.String))


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

    def __init__(
        self, spec: DecontamSpec, base_dir: Path, data_dir: Path | None, cache_dir: Path | None = None
    ) -> None:
        """With a `cache_dir`, each source's hits are remembered and reused while nothing they depend on
        changes (`mixer.hits_cache`)."""
        self.spec = spec
        self.cache_dir = cache_dir
        items = {}
        self.files = []
        self._benchmarks = []  # what the hits depend on, for the cache key
        for bench in spec.benchmarks:
            path = resolve_benchmark(bench, base_dir, data_dir)
            items[bench.name] = benchmark_items(bench, path)
            self.files.append({"benchmark": bench.name, "path": str(path), "items": items[bench.name].height})
            self._benchmarks.append({"name": bench.name, "fields": list(bench.fields), "sha256": file_sha256(path)})
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
