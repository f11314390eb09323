"""Load each resolved source into canonical rows, apply per-source filters, count everything.

Like a datatrove step, each filter is a named boolean expression; every row it drops is counted under its
name, and malformed records are handled by the source's `on_error` policy (error | skip | quarantine).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from mixer.adapters import get_adapter
from mixer.adapters.base import (
    FIRST_IS_ASSISTANT,
    UNKNOWN_ROLE,
    Adapter,
    Context,
    content_chars,
    content_text,
    fitting_formats,
    holds_binary,
    system_first,
)
from mixer.adapters.formats import supported_suffix
from mixer.batches import Member, batches
from mixer.errors import MixerError
from mixer.io import (
    file_kind,
    first_array_record,
    first_record,
    read_chunks,
    read_small_files,
    read_table,
    record_schema,
    text_size,
)
from mixer.mix import marked
from mixer.recipe import Filters
from mixer.resolve import InputFile, ResolvedSource
from mixer.shapes import Misshapen, RecordShape, json_text
from mixer.threads import one_ahead

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
PAYLOAD = {"sft": ("messages",), "prompts": ("messages",), "preference": ("prompt", "chosen", "rejected")}
CHUNK_BYTES = 16 << 20  # text per chunk of a JSON-lines file: bounds the memory of parsing and converting


@dataclass(frozen=True)
class Shared:
    """What every row of a file-backed source has alike: its name (`dataset`) and where it came from (meta's
    source, revision and license; of the other meta fields, only `lang` and `repeat` vary). Staging leaves these
    out of the rows it writes (mixer.stage): a struct of ten fields cost more to gather, convert and write
    again at every step than the conversation beside it."""

    dataset: str
    source: str
    revision: str | None
    license: str | None

    def meta(self, lang: pl.Expr, repeat: pl.Expr) -> pl.Expr:
        """The canonical `meta` of rows of this source with `lang` and `repeat`."""
        return (
            pl.struct(
                source=pl.lit(self.source),
                revision=pl.lit(self.revision, dtype=pl.String),
                license=pl.lit(self.license),
                lang=lang,
                parent_id=pl.lit(None, dtype=pl.String),
                root_id=pl.lit(None, dtype=pl.String),
                operator=pl.lit(None, dtype=pl.String),
                round=pl.lit(None, dtype=pl.Int32),
                teacher=pl.lit(None, dtype=pl.String),
                repeat=repeat,
            )
            .cast(META)
            .alias("meta")
        )


def shared_columns(source: ResolvedSource) -> Shared:
    entry = source.entry
    return Shared(source.spec.name, entry.name if entry else "inline", source.revision, source.license)


@dataclass
class Pool:
    """A source's usable rows (canonical schema plus `__order`, the file order) and how many each step removed."""

    source: ResolvedSource
    rows: pl.DataFrame
    counts: dict[str, int] = field(default_factory=dict)
    rejects: pl.DataFrame | None = None
    ids: pl.DataFrame | None = None  # (id, kept) of every usable row, for `unique_ids`; None when ids are final
    shared: Shared | None = None  # for rows read from files; evolved rows carry meta fields of their own

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


def _malformed(
    source: ResolvedSource,
    file: str,
    raw: pl.DataFrame,
    converted: pl.DataFrame,
    unparsable: list,
    misshapen: list[Misshapen],
) -> pl.DataFrame:
    """A file's (or chunk's) malformed records as reject rows (dataset, file, row, reason, record): `raw` and
    `converted` hold only its malformed rows; `unparsable` its lines that were not even records, `misshapen`
    its records the reader set aside (mixer.shapes)."""
    parts = []
    bad = converted.select("__row", "__reason").unique("__row", keep="first")
    if bad.height:
        if "__record" in raw.columns or any(holds_binary(d) for n, d in raw.schema.items() if n != "__row"):
            # records kept as Python objects (mixer.io._record_objects), or with bytes, which polars cannot quote
            objects = raw["__record"].to_list() if "__record" in raw.columns else raw.drop("__row").to_dicts()
            quoted = [json.dumps(record, ensure_ascii=False, default=json_text) for record in objects]
            records = raw.select("__row").with_columns(pl.Series("record", quoted, dtype=pl.String))
        else:
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
    if misshapen:
        rows = [(source.spec.name, file, index + 1, reason, text) for index, reason, text in misshapen]
        parts.append(pl.DataFrame(rows, schema=REJECT_SCHEMA, orient="row"))
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
    # in file order, as the error lists them and rejects/ keeps them: the three kinds were listed kind by kind
    return pl.concat(parts).sort("row", maintain_order=True) if parts else pl.DataFrame(schema=REJECT_SCHEMA)


def apply_filters(rows: pl.DataFrame, filters: list[tuple[str, pl.Expr]], counts: dict[str, int]) -> pl.DataFrame:
    """Run `row_filters` in order, counting under each name the rows it drops."""
    for name, keep in filters:
        before = rows.height
        rows = rows.filter(keep.fill_null(False))
        counts[name] = before - rows.height
    return rows


def add_counts(total: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    """Sum per-step counts of chunks, keeping the order steps first appear in."""
    for step, n in more.items():
        total[step] = total.get(step, 0) + n
    return total


def unique_ids(ids: pl.DataFrame) -> pl.Series:
    """Final ids of the kept rows, from (id, kept) of every usable row of a source in file order. Native ids
    are not always unique (ShareGPT splits a conversation into parts with one id): the n-th repeat of an id
    among the usable rows becomes `id#n`, so selection keys stay distinct. Decided once per source, after all
    its chunks, so reading in chunks costs nothing here."""
    if ids["id"].hash().n_unique() == ids.height:  # distinct hashes, distinct ids: 10x faster than comparing ids
        return ids.filter("kept")["id"]
    nth = pl.int_range(pl.len()).over("id")
    renamed = pl.when(nth > 0).then(pl.concat_str([pl.col("id"), pl.lit("#"), nth.cast(pl.String)]))
    return ids.select(renamed.otherwise(pl.col("id")).alias("id"), "kept").filter("kept")["id"]


def _canonical(rows: pl.DataFrame, shared: Shared, payload: tuple[str, ...]) -> pl.DataFrame:
    return rows.select(
        "id",
        pl.lit(shared.dataset).alias("dataset"),
        *payload,
        shared.meta(pl.col("lang"), pl.lit(0, dtype=pl.Int32)),
        "__order",
    )


def _malformed_error(source: ResolvedSource, malformed: pl.DataFrame, every: bool = False) -> MixerError:
    """`every`: no record of the source was usable, which more often means the wrong format than bad data."""
    name = source.spec.name
    shown = "\n".join(f"  {r['file']}: row {r['row']}: {r['reason']}" for r in malformed.head(MAX_REPORTED).to_dicts())
    more = f"\n  ... and {malformed.height - MAX_REPORTED} more" if malformed.height > MAX_REPORTED else ""
    fix = (
        "set `on_error: skip` (drop and count) or `on_error: quarantine` (also write them to rejects/) on "
        + (f"source {name!r}" if source.spec.key is None else source.spec.where)
        if source.on_error == "error"
        else f"`on_error: {source.on_error}` set them all aside, which leaves the source no row: fix the data"
    )
    fits = _formats_fitting_first_record(Path(malformed["file"][0]), source) if every else []
    check = "check that the source's `format:` and `fields:` fit it"  # set aside, every record leaves no row
    leading_reply = source.format == "sharegpt" and (malformed["reason"] == FIRST_IS_ASSISTANT).any()
    if fits:
        hint = f"every record is malformed as {source.format}; the file's fields are those of {' or '.join(fits)}"
    elif leading_reply and not source.options.get("trim_leading_assistant"):
        hint = (
            "a ShareGPT page often opens with the end of a reply: set `options: {trim_leading_assistant: true}` to "
            f"drop such a first turn, as FastChat's training does, or {fix}"
        )
    elif malformed["reason"].str.starts_with(UNKNOWN_ROLE).any():
        hint = (
            "a row's turns are system, user and assistant; tool-use turns (tool, function, observation) have no "
            f"place in them: {fix}"
        )
    elif every and source.on_error == "error":
        hint = f"every record is malformed as {source.format}: fix the data, or {check}"
    elif every:
        hint = f"{fix}, or {check}"
    else:
        hint = f"fix the data, or {fix}" if source.on_error == "error" else fix
    return MixerError(f"{source.spec.where}: {malformed.height} malformed record(s):\n{shown}{more}", hint)


def _formats_fitting_first_record(path: Path, source: ResolvedSource) -> list[str]:
    """The formats a file's first record fits (LIMA's texts read as ShareGPT turns make every record malformed,
    not a missing field): JSON lines, a JSON array, or parquet's schema. CSV and TSV hold no conversations."""
    if not path.is_file():
        return []
    kind = file_kind(path)
    try:
        if kind == "parquet":
            schema = pl.read_parquet_schema(path)
        elif kind == "arrow":
            schema = next(read_chunks(path, 1)).frame.drop("__row").schema
        else:
            record = first_array_record(path) if kind == "json" else None
            record = record or (first_record(path) if kind in ("json", "jsonl") else None)
            if record is None:
                return []
            schema = pl.DataFrame([record]).schema
    except (pl.exceptions.PolarsError, OSError, TypeError, ValueError, OverflowError):
        return []
    adds_rows = not source.spec.selector.takes_nothing
    fits = fitting_formats(pl.Schema(schema), leave_out=source.format, adds_rows=adds_rows, mapping=source.fields)
    return [f"format: {f}" for f in fits]


def file_id_prefixes(paths: list[Path]) -> dict[Path, str]:
    """What a row id says about its file when a source reads several: the file's path under the folder they
    all share, without its extension (`s/part.1/17`, `s/en/train/17`). Cutting the name at its first dot
    instead gave `data.part1.jsonl` and `data.part2.jsonl`, or two `train.jsonl` in different folders, one
    prefix, and their rows ids like `s/data/0#1`."""
    if len(paths) < 2:
        return {path: "" for path in paths}
    shared = Path(os.path.commonpath([path.parent for path in paths]))
    prefixes = {}
    for path in paths:
        relative = path.relative_to(shared).as_posix()
        suffix = supported_suffix(relative) or ""
        prefixes[path] = f"{relative[: len(relative) - len(suffix)]}/"
    return prefixes


def _read_fields(ctx: Context) -> tuple[set[str], set[str]]:
    """Names an adapter may read from a record: the record's columns it maps, and keys inside values given as
    options (the role and content keys of turns)."""
    return set(ctx.fields.values()), {v for v in ctx.options.values() if isinstance(v, str)}


def _record_shape(adapter: Adapter, ctx: Context) -> RecordShape | None:
    """Where the format keeps conversations and text in this source's records (its field mapping and keys)."""
    if not (adapter.turn_fields or adapter.text_fields):
        return None
    text = adapter.turns_are_text
    return RecordShape(
        fields=tuple(ctx.fields[name] for name in adapter.turn_fields),
        role_key=None if text else ctx.options.get("role_key", "role"),
        content_key=None if text else ctx.options.get("content_key", "content"),
        text_roles={ctx.fields[name]: role for name, role in adapter.text_turn_roles.items()},
        texts=tuple(ctx.fields[name] for name in adapter.text_fields),
    )


def _nested_records(path: Path, field: str | None) -> bool:
    """Whether `path` holds a format's nested records (`Format.nested`): JSON lines whose first record has
    `field` as an object."""
    if field is None or file_kind(path) != "jsonl":
        return False
    first = first_record(path)
    return first is not None and isinstance(first.get(field), dict)


def load_chunks(
    source: ResolvedSource,
    mixture_patterns: tuple[str, ...] = (),
    chunk_bytes: int | None = None,
    on_read: Callable[[int], None] | None = None,
    read_ahead: Callable[[], bool] | None = None,
) -> Iterator[Pool]:
    """The source's usable rows as a sequence of pools, one per chunk of input (a whole file, or about
    `chunk_bytes` of a JSON-lines file when the adapter converts records one by one; small files together),
    with their counts. Malformed records are gathered over the whole source: with `on_error: error` the source
    fails at its end, naming the first few; nothing of a failed source is used. `on_read` hears the bytes read,
    for progress. With `read_ahead`, the next table is read in a second thread while it says a core is to
    spare (mixer.threads.one_ahead)."""
    adapter = get_adapter(source.format)
    name = source.spec.name
    prefixes = file_id_prefixes([f.path for f in source.files])
    payload = PAYLOAD[adapter.kind]
    shared = shared_columns(source)
    filters = row_filters(source.spec.filters, mixture_patterns) if adapter.kind != "preference" else []
    order = 0
    failures: list[pl.DataFrame] = []
    records_read = 0  # parsable or not, so a refusal can tell whether every record was malformed
    converted_any = False
    held_counts: dict[str, int] = {}  # of tables with no record, until a pool carries them
    held_rejects: list[pl.DataFrame] = []
    last_rows: pl.DataFrame | None = None

    def context(path: Path) -> Context:
        return Context(
            fields={**adapter.fields, **source.fields},
            options={**adapter.options, **source.options},
            file=str(path),
            format=adapter.name,
            source=source.spec.where,
            adds_rows=not source.spec.selector.takes_nothing,
        )

    def read_file(input_file: InputFile) -> Iterator[Member]:
        path = input_file.path
        ctx = context(path)
        header = not adapter.headerless
        columns, keys = _read_fields(ctx)
        objects = _nested_records(path, adapter.nested)
        read = (
            read_chunks(
                path,
                chunk_bytes or CHUNK_BYTES,
                header=header,
                columns=columns,
                keys=keys,
                on_read=on_read,
                objects=objects,
                shape=_record_shape(adapter, ctx),
            )
            if adapter.row_local or objects
            else [read_table(path, header=header, on_read=on_read)]
        )
        for table in read:
            yield Member(path, prefixes[path], table, input_file.bytes, ctx)

    def small_run(start: int) -> list[InputFile]:
        """The files of one kind, JSON lines or JSON (plain or gzip), from `start` on whose text fits in one
        batch together; none when files are not batched (`batch_bytes` 0: formats whose records are not
        converted one by one, such as OpenAssistant's trees, which are read as objects)."""
        run: list[InputFile] = []
        size = 0
        kind = file_kind(source.files[start].path)
        for input_file in source.files[start:]:
            path = input_file.path
            if kind not in ("jsonl", "json") or file_kind(path) != kind:
                break
            size += text_size(path)
            if size >= batch_bytes:
                break
            run.append(input_file)
        return run

    def tables() -> Iterator[Member]:
        """Every file's tables; a run of small JSON-lines or JSON files after its first is parsed as one text
        with that file's schema (`read_small_files`), or, when that could lose something, file by file."""
        at = 0
        while at < len(source.files):
            run = small_run(at)
            if len(run) < 2:
                yield from read_file(source.files[at])
                at += 1
                continue
            first = list(read_file(run[0]))
            yield from first
            rest = run[1:]
            together = None
            if len(first) == 1 and first[0].small(batch_bytes):  # parsed whole, nothing set aside
                ctx = first[0].ctx
                columns, keys = _read_fields(ctx)
                schema = record_schema(first[0].table.frame)
                paths = [f.path for f in rest]
                array = file_kind(paths[0]) == "json"
                shape = _record_shape(adapter, ctx)
                together = read_small_files(paths, schema, array=array, columns=columns, keys=keys, shape=shape)
            if together is None:
                for input_file in rest:
                    yield from read_file(input_file)
            else:
                for input_file, table in zip(rest, together, strict=True):
                    if on_read is not None:
                        on_read(input_file.bytes)
                    path = input_file.path
                    yield Member(path, prefixes[path], table, input_file.bytes, context(path))
            at += len(run)

    # half a chunk: a large file converts chunk by chunk, small files join up to that size
    batch_bytes = (chunk_bytes or CHUNK_BYTES) // 2 if adapter.row_local else 0
    read = tables() if read_ahead is None else one_ahead(tables(), read_ahead)
    for batch in batches(read, batch_bytes):
        frame = batch.joined()
        if frame.height == 0:  # empty, or every line unparsable: nothing to convert
            converted, bad = None, pl.DataFrame({"__row": [], "__reason": []})
        else:
            converted = adapter.convert(frame, batch.ctx)
            converted_any = True
            bad = converted.filter(pl.col("__reason").is_not_null()).select("__row", "__reason")
        set_aside = sum(len(m.table.unparsable) + len(m.table.misshapen) for m in batch.members)  # by the reader
        found = [pl.DataFrame(schema=REJECT_SCHEMA)]
        for member, member_bad in batch.split(bad) if bad.height or set_aside else ():
            table = member.table
            # the raw records are kept only to quote malformed ones
            raw = (
                table.whole_records().filter(pl.col("__row").is_in(member_bad["__row"].implode()))
                if member_bad.height
                else table.frame.clear()
            )
            found.append(_malformed(source, str(member.path), raw, member_bad, table.unparsable, table.misshapen))
        malformed = pl.concat(found)
        counts = {"read": (converted.height if converted is not None else 0) + set_aside}
        counts["malformed"] = malformed.height
        records_read += counts["read"]
        if malformed.height and source.on_error == "error":
            failures.append(malformed)
        if failures:
            continue
        if converted is None:  # no record to convert: its counts and broken lines go with the next pool
            add_counts(held_counts, counts)
            held_rejects.append(malformed)
            continue
        counts, held_counts = add_counts(held_counts, counts), {}
        malformed, held_rejects = pl.concat([*held_rejects, malformed]), []
        rows = converted.filter(pl.col("__reason").is_null())
        rows = rows.with_columns(
            (pl.lit(f"{name}/") + batch.base_ids()).alias("id"),
            pl.int_range(order, order + pl.len()).alias("__order"),
        )
        order += rows.height
        rows = _canonical(rows, shared, payload).with_row_index("__i")
        if source.spec.system is not None:  # before filters and keys, so max_chars and token counts see it
            rows = system_first(rows, "messages", pl.lit(source.spec.system))
        usable = rows["id"]
        rows = apply_filters(rows, filters, counts)
        ids = pl.DataFrame({"id": usable, "kept": marked(usable.len(), rows["__i"])})
        rows = rows.drop("__i")
        quarantined = malformed if source.on_error == "quarantine" and malformed.height else None
        yield Pool(source, rows, counts, quarantined, ids, shared)
        last_rows = rows
    if failures:
        raise _malformed_error(source, pl.concat(failures), every=sum(f.height for f in failures) == records_read)
    if not converted_any and held_rejects and sum(r.height for r in held_rejects):
        raise _malformed_error(source, pl.concat(held_rejects), every=True)  # on_error skip or quarantine
    if not converted_any:
        raise MixerError(f"{source.spec.where}: no records in {', '.join(str(f.path) for f in source.files)}")
    if held_counts and last_rows is not None:  # the last tables held no record: a pool of no rows reports them
        malformed = pl.concat(held_rejects)
        quarantined = malformed if source.on_error == "quarantine" and malformed.height else None
        no_ids = pl.DataFrame(schema={"id": pl.String, "kept": pl.Boolean})
        yield Pool(source, last_rows.clear(), held_counts, quarantined, no_ids, shared)


def merge_chunks(chunks: list[Pool]) -> Pool:
    """One pool from `load_chunks` output (which always records ids), with final ids: training stages take
    their data whole."""
    counts: dict[str, int] = {}
    for chunk in chunks:
        add_counts(counts, chunk.counts)
    rejects = [c.rejects for c in chunks if c.rejects is not None]
    rows = pl.concat([c.rows for c in chunks]).with_columns(unique_ids(pl.concat([c.ids for c in chunks])))
    return Pool(chunks[0].source, rows, counts, pl.concat(rejects) if rejects else None, shared=chunks[0].shared)


def load_pool(source: ResolvedSource, mixture_patterns: tuple[str, ...] = ()) -> Pool:
    return merge_chunks(list(load_chunks(source, mixture_patterns)))
