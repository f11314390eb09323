"""Statistics of a built mixture (stats.json) and the HTML report beside the dataset card.

Computed from the written shards and the manifest, so `mixer stats OUT_DIR` regenerates both for any build.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import polars as pl

from mixer.adapters.base import content_chars, content_text, first_content
from mixer.errors import MixerError
from mixer.files import write_atomic_file
from mixer.hashing import file_sha256
from mixer.markup import bar_chart, html_table
from mixer.outputs import REBUILD, listed_shards, read_manifest

TOP_FIRST_WORDS = 15
LONGEST = 10**12  # the last bin's upper edge: every row lands in some bin
HISTOGRAM_BINS = [0, 100, 250, 500, 1000, 2000, 4000, 8000, 16000, 32000, LONGEST]


def _tokenizer_file(path: Path) -> Path:
    """`output.tokenizer` and `--tokenizer` name a tokenizer.json or a folder holding one."""
    return path / "tokenizer.json" if path.is_dir() else path


def load_tokenizer(path: Path) -> Any:
    """A `tokenizers.Tokenizer` from a tokenizer.json or a folder holding one (never from the hub)."""
    file = _tokenizer_file(path)
    if not file.is_file():
        raise MixerError(f"tokenizer {path}: no tokenizer.json there", "give the tokenizer.json of your model")
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise MixerError(
            "token counts with a tokenizer need the `tokenizers` package", "pip install tokenizers"
        ) from None
    try:
        return Tokenizer.from_file(str(file))
    except Exception as exc:  # tokenizers raises a bare Exception for a file it cannot read
        raise MixerError(
            f"tokenizer {file}: tokenizers cannot read it ({exc})",
            "give the tokenizer.json of your model (a Hugging Face fast tokenizer's file)",
        ) from None


def _token_counts(rows: pl.DataFrame, payload: str, tokenizer: Any) -> pl.Series:
    """Tokens of each row's message contents joined by newlines (no chat template: what the data itself costs)."""
    texts = rows.select(content_text(pl.col(payload)))
    encodings = tokenizer.encode_batch(texts.to_series().to_list(), add_special_tokens=False)
    return pl.Series("tokens", [len(e.ids) for e in encodings], dtype=pl.Int64)


def row_features(rows: pl.DataFrame, tokenizer: Any = None) -> pl.DataFrame:
    """The few numbers and words per row the statistics are made of, so a build can collect them shard by
    shard instead of holding the mixture."""
    payload = "messages" if "messages" in rows.columns else "prompt"
    frame = rows.select(
        "dataset",
        content_chars(pl.col(payload)).alias("chars"),
        pl.col(payload).list.eval(pl.element().struct.field("role") == "assistant").list.sum().alias("turns"),
        first_content(pl.col(payload), "user")
        .str.extract(r"^\s*([A-Za-z]+)")  # the leading word after any whitespace, without copying each prompt
        .str.to_lowercase()
        .alias("first_word"),
        pl.col("meta").struct.field("round").alias("round"),
        pl.col("meta").struct.field("operator").alias("operator"),
        pl.col("meta").struct.field("lang").alias("lang"),
    )
    if tokenizer is not None:
        frame = frame.with_columns(_token_counts(rows, payload, tokenizer))
    else:
        frame = frame.with_columns((pl.col("chars") // 4).alias("tokens"))
    # compact types: a build keeps these for every row of the mixture until the statistics are made
    return frame.with_columns(
        pl.col("dataset", "first_word", "operator", "lang").cast(pl.Categorical),
        pl.col("chars", "tokens", "turns").cast(pl.Int32),
        pl.col("round").cast(pl.Int16),
    )


def tokens_method(tokenizer: Path | None) -> str:
    """Which tokenizer counted, so two builds' token counts can be told comparable or not: its file (with the
    folder a `tokenizer.json` sits in, which names the model) and the start of its sha256. The bare name said
    `tokenizer final` for a model's `final/` folder and `tokenizer tokenizer.json` for every file."""
    if tokenizer is None:
        return "characters / 4"
    file = _tokenizer_file(tokenizer)
    shown = f"{file.parent.name}/{file.name}" if file.name == "tokenizer.json" and file.parent.name else file.name
    return f"tokenizer {shown} (sha256 {file_sha256(file)[:12]})"


def mixture_stats(frame: pl.DataFrame, method: str) -> dict[str, Any]:
    """Statistics from the row features of a whole mixture (`row_features` of each of its shards)."""
    total_rows = frame.height
    total_tokens = int(frame["tokens"].sum() or 0)
    per_source = (
        frame.group_by("dataset")
        .agg(
            pl.len().alias("rows"),
            pl.col("turns").mean().alias("mean_turns"),
            pl.col("chars").sum().alias("chars"),
            pl.col("chars").mean().alias("mean_chars"),
            pl.col("chars").median().alias("median_chars"),
            pl.col("tokens").sum().alias("tokens"),
        )
        .sort("dataset")
    )
    sources = {}
    for r in per_source.iter_rows(named=True):
        tokens = int(r["tokens"])
        hist = frame.filter(pl.col("dataset") == r["dataset"])["chars"].hist(
            bins=HISTOGRAM_BINS, include_breakpoint=True
        )
        sources[r["dataset"]] = {
            "rows": r["rows"],
            "mean_turns": round(r["mean_turns"] or 0, 3),
            "chars": int(r["chars"]),
            "mean_chars": round(r["mean_chars"] or 0, 1),
            "median_chars": r["median_chars"],
            "est_tokens": tokens,
            "share_rows": round(r["rows"] / total_rows, 6) if total_rows else 0,
            "share_tokens": round(tokens / total_tokens, 6) if total_tokens else 0,
            "length_histogram": [
                {"up_to_chars": b, "rows": int(c)} for b, c in hist.select("breakpoint", "count").iter_rows()
            ],
        }
    # the first word, not the verb Self-Instruct's parser finds: questions open with "what", and a verb list of
    # our own would misname the rest; this says which openings dominate, which is what the table is read for
    first_words = (
        frame.drop_nulls("first_word")
        .group_by("first_word")
        .len()
        .sort(["len", "first_word"], descending=[True, False])
        .head(TOP_FIRST_WORDS)
    )
    lineage = frame.drop_nulls("operator").group_by("round", "operator").len().sort("round", "operator")
    langs = frame.drop_nulls("lang").group_by("lang").len().sort(["len", "lang"], descending=[True, False])
    return {
        "rows": total_rows,
        "est_tokens": total_tokens,
        "tokens_method": method,
        "sources": sources,
        "top_first_words": [{"word": w, "rows": n} for w, n in first_words.iter_rows()],
        "languages": [{"lang": lang, "rows": n} for lang, n in langs.iter_rows()],
        "evolve_lineage": [{"round": r, "operator": op, "rows": n} for r, op, n in lineage.iter_rows()],
    }


def charts(stats: dict[str, Any]) -> list[str]:
    names = list(stats["sources"])
    shares = bar_chart(
        "share of the mixture",
        names,
        {
            "rows": [100 * stats["sources"][n]["share_rows"] for n in names],
            "tokens": [100 * stats["sources"][n]["share_tokens"] for n in names],
        },
        "{:.1f}%",
    )
    edges = [h["up_to_chars"] for h in next(iter(stats["sources"].values()))["length_histogram"]] if names else []
    lengths = bar_chart(
        "rows by length (characters per row, up to)",
        [f"≤ {e:,.0f}" if e < LONGEST else f"> {HISTOGRAM_BINS[-2]:,}" for e in edges],
        {n: [h["rows"] for h in stats["sources"][n]["length_histogram"]] for n in names},
    )
    return [shares, lengths]


def render_report(name: str, stats: dict[str, Any], manifest: dict[str, Any]) -> str:
    sources = html_table(
        "sources",
        ["source", "rows", "share rows", "est. tokens", "share tokens", "mean turns", "median chars"],
        [
            [
                n,
                f"{s['rows']:,}",
                f"{s['share_rows']:.1%}",
                f"{s['est_tokens']:,}",
                f"{s['share_tokens']:.1%}",
                s["mean_turns"],
                s["median_chars"],
            ]
            for n, s in stats["sources"].items()
        ],
    )
    parts = [
        f"<h1>{html.escape(name)}</h1>",
        f"<p>{stats['rows']:,} rows, ~{stats['est_tokens']:,} tokens ({stats['tokens_method']})</p>",
        "<h2>Composition</h2>",
        sources,
        *charts(stats),
    ]
    parts += [
        "<h2>Top first words of the prompts</h2>",
        html_table("first_words", ["word", "rows"], [[w["word"], w["rows"]] for w in stats["top_first_words"]]),
    ]
    if stats["languages"]:
        parts += [
            "<h2>Languages</h2>",
            html_table("languages", ["lang", "rows"], [[x["lang"], x["rows"]] for x in stats["languages"]]),
        ]
    if stats["evolve_lineage"]:
        parts += [
            "<h2>Evol-Instruct lineage</h2>",
            html_table(
                "lineage",
                ["round", "operator", "rows"],
                [[x["round"], x["operator"], x["rows"]] for x in stats["evolve_lineage"]],
            ),
        ]
    decontam = manifest.get("decontamination")
    if decontam:
        parts += [
            f"<h2>Decontamination ({decontam['n']}-grams, mode {decontam['mode']})</h2>",
            html_table(
                "decontamination",
                ["source", "benchmark", "rows hit", "example span"],
                [
                    [h["source"], h["benchmark"], h["rows"], h["examples"][0]["span"] if h["examples"] else ""]
                    for h in decontam["hits"]
                ],
            ),
        ]
    overlap = manifest.get("overlap")
    if overlap:
        names = overlap["sources"]
        parts += [
            "<h2>Overlap between sources (rows of the row source whose prompt also occurs in the column source)</h2>",
            html_table(
                "overlap",
                ["", *names],
                [[a, *("—" if v is None else v for v in row)] for a, row in zip(names, overlap["matrix"], strict=True)],
            ),
        ]
    style = (
        "body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}"
    )
    head = f"<meta charset='utf-8'><title>{html.escape(name)}</title><style>{style}</style>"
    return f"<!doctype html><html><head>{head}</head><body>{''.join(parts)}</body></html>\n"


def write_stats(folder: Path, features: pl.DataFrame, manifest: dict[str, Any], method: str) -> dict[str, Any]:
    """stats.json and report.html into `folder`, each replaced atomically."""
    stats = mixture_stats(features, method)
    write_atomic_file(folder / "stats.json", json.dumps(stats, indent=2, ensure_ascii=False) + "\n")
    write_atomic_file(folder / "report.html", render_report(manifest["recipe"]["name"], stats, manifest))
    return stats


def regenerate(out_dir: Path, tokenizer: Path | None = None) -> dict[str, Any]:
    """`mixer stats OUT_DIR`: rebuild stats.json and report.html from the shards (one at a time) and the manifest."""
    manifest = read_manifest(out_dir)
    loaded = load_tokenizer(tokenizer) if tokenizer is not None else None
    features = pl.concat([row_features(_read_shard(shard), loaded) for shard in listed_shards(out_dir, manifest)])
    return write_stats(out_dir, features, manifest, tokens_method(tokenizer))


def _read_shard(path: Path) -> pl.DataFrame:
    try:
        return pl.read_parquet(path)
    except (OSError, pl.exceptions.ComputeError) as exc:  # the right size, and damaged
        raise MixerError(f"{path}: cannot be read as parquet ({exc})", REBUILD) from None
