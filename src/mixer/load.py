"""Load each resolved source into canonical rows, apply per-source filters, count everything.

Like a datatrove step, each filter is a named boolean expression; every row it drops is counted under its
name, and malformed records are handled by the source's `on_error` policy (error | skip | quarantine).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from mixer.adapters import get_adapter
from mixer.adapters.base import Context, content_chars, content_text
from mixer.errors import MixerError
from mixer.io import read_table
from mixer.recipe import Filters
from mixer.resolve import ResolvedSource

META = pl.Struct(
    {
        "source": pl.String,
        "revision": pl.String,
        "license": pl.String,
        "lang": pl.String,
        "parent_id": pl.String,
        "root_id": pl.String,
        "operator": pl.String,
        "round": pl.Int32,
        "teacher": pl.String,
        "repeat": pl.Int32,
    }
)
REJECT_SCHEMA = {"dataset": pl.String, "file": pl.String, "row": pl.Int64, "reason": pl.String, "record": pl.String}
MAX_REPORTED = 5
PAYLOAD = {"sft": ("messages",), "preference": ("prompt", "chosen", "rejected")}


@dataclass
class Pool:
    """A source's usable rows (canonical schema plus `__order`, the file order) and how many each step removed."""

    source: ResolvedSource
    rows: pl.DataFrame
    counts: dict[str, int] = field(default_factory=dict)
    rejects: pl.DataFrame | None = None

    @property
    def name(self) -> str:
        return self.source.spec.name


def _pattern(patterns: tuple[str, ...]) -> str:
    return "|".join(f"(?:{p})" for p in patterns)


def row_filters(filters: Filters, mixture_patterns: tuple[str, ...]) -> list[tuple[str, pl.Expr]]:
    """(name, keep-expression) pairs in the order they run."""
    assistant_turns = pl.col("messages").list.eval(pl.element().struct.field("role") == "assistant").list.sum()
    checks: list[tuple[str, pl.Expr]] = []
    if filters.min_turns is not None:
        checks.append(("min_turns", assistant_turns >= filters.min_turns))
    if filters.max_turns is not None:
        checks.append(("max_turns", assistant_turns <= filters.max_turns))
    if filters.max_chars is not None:
        chars = content_chars(pl.col("messages"))
        checks.append(("max_chars", chars <= filters.max_chars))
    if filters.lang:
        checks.append(("lang", pl.col("meta").struct.field("lang").is_in(list(filters.lang))))
    if filters.drop_patterns:
        checks.append(
            ("drop_patterns", ~content_text(pl.col("messages")).str.contains(_pattern(filters.drop_patterns)))
        )
    if mixture_patterns:
        checks.append(
            ("mixture.drop_patterns", ~content_text(pl.col("messages")).str.contains(_pattern(mixture_patterns)))
        )
    return checks


def _malformed(source: ResolvedSource, frames: list[tuple[str, pl.DataFrame, pl.DataFrame, list]]) -> pl.DataFrame:
    """Collect malformed records of all files as reject rows (dataset, file, row, reason, record).
    Each frame holds only a file's malformed rows: (file, their raw records, their converted rows, unparsable)."""
    parts = []
    for file, raw, converted, unparsable in frames:
        bad = converted.select("__row", "__reason").unique("__row", keep="first")
        if bad.height:
            records = raw.select("__row", pl.struct(pl.exclude("__row")).struct.json_encode().alias("record"))
            part = (
                bad.join(records, on="__row", how="left")
                .sort("__row")
                .select(
                    pl.lit(source.spec.name).alias("dataset"),
                    pl.lit(file).alias("file"),
                    (pl.col("__row").cast(pl.Int64) + 1).alias("row"),
                    pl.col("__reason").alias("reason"),
                    pl.col("record"),
                )
            )
            parts.append(part)
        if unparsable:
            parts.append(
                pl.DataFrame(
                    [
                        {
                            "dataset": source.spec.name,
                            "file": file,
                            "row": line,
                            "reason": f"line {line}: {reason}",
                            "record": text,
                        }
                        for line, reason, text in unparsable
                    ],
                    schema=REJECT_SCHEMA,
                )
            )
    return pl.concat(parts) if parts else pl.DataFrame(schema=REJECT_SCHEMA)


def load_pool(source: ResolvedSource, mixture_patterns: tuple[str, ...] = ()) -> Pool:
    adapter = get_adapter(source.format)
    name = source.spec.name
    multi_file = len(source.files) > 1
    converted_parts, frames = [], []
    for input_file in source.files:
        table = read_table(input_file.path, header=not adapter.headerless)
        ctx = Context(
            fields={**adapter.fields, **source.fields},
            options={**adapter.options, **source.options},
            file=str(input_file.path),
        )
        if table.frame.height == 0:  # empty, or every line unparsable: nothing to convert
            frames.append(
                (str(input_file.path), table.frame, pl.DataFrame({"__row": [], "__reason": []}), table.unparsable)
            )
            continue
        converted = adapter.convert(table.frame, ctx)
        prefix = f"{input_file.path.name.split('.')[0]}/" if multi_file else ""
        converted = converted.with_columns(pl.lit(prefix).alias("__prefix"))
        converted_parts.append(converted)
        # the raw records are kept only to quote malformed ones: a clean file's raw frame is freed now
        bad = converted.filter(pl.col("__reason").is_not_null())
        raw = table.frame.filter(pl.col("__row").is_in(bad["__row"].implode())) if bad.height else table.frame.clear()
        frames.append((str(input_file.path), raw, bad, table.unparsable))

    malformed = _malformed(source, frames)
    counts = {"read": sum(p.height for p in converted_parts) + sum(len(f[3]) for f in frames)}
    if malformed.height and source.on_error == "error":
        shown = "\n".join(
            f"  {r['file']}: row {r['row']}: {r['reason']}" for r in malformed.head(MAX_REPORTED).to_dicts()
        )
        more = f"\n  ... and {malformed.height - MAX_REPORTED} more" if malformed.height > MAX_REPORTED else ""
        raise MixerError(
            f"sources.{name}: {malformed.height} malformed record(s):\n{shown}{more}",
            f"fix the data, or set `on_error: skip` (drop and count) or `on_error: quarantine` (also write them "
            f"to rejects/) on source {name!r}",
        )
    counts["malformed"] = malformed.height

    if not converted_parts:
        raise MixerError(f"sources.{name}: no records in {', '.join(str(f.path) for f in source.files)}")
    rows = pl.concat(converted_parts, how="vertical_relaxed").filter(pl.col("__reason").is_null())
    base_id = pl.coalesce(pl.col("native_id"), pl.concat_str([pl.col("__prefix"), pl.col("__row").cast(pl.String)]))
    rows = rows.with_columns(
        (pl.lit(f"{name}/") + base_id).alias("id"),
        pl.int_range(pl.len()).alias("__order"),
    )
    # native ids are not always unique (ShareGPT splits); suffix repeats so selection keys stay distinct
    nth = pl.int_range(pl.len()).over("id")
    rows = rows.with_columns(
        pl.when(nth > 0).then(pl.concat_str([pl.col("id"), pl.lit("#"), nth.cast(pl.String)])).otherwise(pl.col("id"))
    )
    entry = source.entry
    payload = PAYLOAD[adapter.kind]
    rows = rows.select(
        "id",
        pl.lit(name).alias("dataset"),
        *payload,
        pl.struct(
            source=pl.lit(entry.name if entry else "inline"),
            revision=pl.lit(source.revision, dtype=pl.String),
            license=pl.lit(source.license),
            lang=pl.col("lang"),
            parent_id=pl.lit(None, dtype=pl.String),
            root_id=pl.lit(None, dtype=pl.String),
            operator=pl.lit(None, dtype=pl.String),
            round=pl.lit(None, dtype=pl.Int32),
            teacher=pl.lit(None, dtype=pl.String),
            repeat=pl.lit(0, dtype=pl.Int32),
        )
        .cast(META)
        .alias("meta"),
        "__order",
    )
    filters = row_filters(source.spec.filters, mixture_patterns) if adapter.kind == "sft" else []
    for filter_name, keep in filters:
        before = rows.height
        rows = rows.filter(keep.fill_null(False))
        counts[filter_name] = before - rows.height
    quarantined = malformed if source.on_error == "quarantine" and malformed.height else None
    return Pool(source, rows, counts, quarantined)
