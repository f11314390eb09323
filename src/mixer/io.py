"""Read native dataset files into polars, keeping each record's position for error messages.

Every reader adds `__row` (0-based record index in its file). A file that polars cannot parse as a whole
is re-read line by line so the user learns which line is broken instead of getting a parser panic.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import gzip
import io
import json
import os
import zlib
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
import polars as pl

from mixer import borrowed_schema, record_reader
from mixer.adapters.formats import supported_suffix, unreadable_file
from mixer.encodings import to_utf8_command, wide_encoding
from mixer.errors import MixerError
from mixer.json_array import ArrayChunks, NotAnArray, starts_an_array, whole_array
from mixer.record_reader import NEWLINE_BYTE
from mixer.shapes import Misshapen, RecordShape
from mixer.tsv_quoting import SNIFF_BYTES, quotes_like_csv

if TYPE_CHECKING:
    import pyarrow as pa

NEWLINE = 10
LINE_PROBE = 1 << 16  # bytes read past a block's nominal end to find where its last line ends
UTF8_BOM = b"\xef\xbb\xbf"
WHOLE = 1 << 62  # a chunk size no file reaches


@dataclass
class RawTable:
    """A file's records, plus records that could not even be parsed (with the line and reason), and records
    whose conversations had the wrong shape (mixer.shapes)."""

    path: Path
    frame: pl.DataFrame
    unparsable: list[tuple[int, str, str]]  # (1-based line, reason, raw text)
    text: bytes | None = None  # the JSON lines or array, kept when `frame` was parsed with a borrowed schema
    misshapen: list[Misshapen] = field(default_factory=list)
    array: bool = False  # `text` is a JSON array, not JSON lines
    originals: list[dict] | None = None  # the records as read, when `frame` holds them reshaped (mixer.shapes)

    def whole_records(self) -> pl.DataFrame:
        """The records with every field they have, for quoting malformed ones: a frame parsed with the schema
        of an earlier chunk leaves out fields that first appear in this one."""
        if self.originals is not None:  # quoted as they were, not as the turns a text stands for
            return record_reader.objects_frame(self.frame["__row"], self.originals)
        if self.text is None:
            return self.frame
        first = int(self.frame["__row"][0]) if self.frame.height else 0
        if self.array:
            try:
                return pl.read_json(self.text, infer_schema_length=None).with_row_index("__row", offset=first)
            except pl.exceptions.PolarsError:
                return self.frame  # fields of mixed types: quoted with the fields the schema has
        return _json_lines(self.path, self.text, first)[0].frame


def file_kind(path: Path) -> str:
    suffix = supported_suffix(path.name)
    if suffix is not None:
        return suffix.removesuffix(".gz").lstrip(".")
    message, hint = unreadable_file(str(path))
    raise MixerError(f"{path}: {message}", hint)


def without_bom(path: Path, data: bytes) -> bytes:
    """The text after a UTF-8 byte-order mark, which Windows tools write and JSON parsers reject (every file
    would start with a malformed record). A UTF-16 or UTF-32 file is named as such: parsed as UTF-8, every
    line would only be reported as invalid JSON."""
    if data.startswith(UTF8_BOM):
        return data[len(UTF8_BOM) :]
    if (encoding := wide_encoding(data)) is not None:
        raise MixerError(
            f"{path}: the file is {encoding} (it starts with that byte-order mark); mixer reads UTF-8",
            f"convert it first: {to_utf8_command(path, encoding)}",
        )
    return data


def _gzipped(path: Path) -> bool:
    return path.name.lower().endswith(".gz")


def _open_binary(path: Path) -> BinaryIO:
    """The file's bytes, decompressed as they are read when it is gzip."""
    return gzip.open(path, "rb") if _gzipped(path) else open(path, "rb")


def _read_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return without_bom(path, gzip.decompress(data) if _gzipped(path) else data)


def _jsonl_slow(
    path: Path, data: bytes, first_row: int = 0, first_line: int = 0, shape: RecordShape | None = None
) -> tuple[RawTable, int]:
    """Parse line by line: polars names no line when it fails. Returns the table and the number of records
    (parsable or not) it spans. With `shape`, records are sorted by it when the frame is suspect."""
    records, indexes, bad, spanned = record_reader.json_records(data, first_row, first_line)
    try:  # from the Python objects: writing them back to JSON for polars' reader costs as much as the parse
        frame = pl.DataFrame(records, infer_schema_length=None) if records else pl.DataFrame()
        frame = frame.with_columns(pl.Series("__row", indexes, dtype=pl.UInt32)).select("__row", pl.exclude("__row"))
    except (pl.exceptions.PolarsError, TypeError, ValueError, OverflowError):  # a field of no one type
        frame = None
    if _as_parsed(frame, shape):
        return RawTable(path, frame, bad), spanned
    return _from_records(path, shape, records, indexes, bad), spanned


def _record_objects(path: Path, data: bytes, first_row: int = 0, first_line: int = 0) -> tuple[RawTable, int]:
    """Each record as the Python object json makes of it (`__record`, of polars' Object type), for records
    nested too deeply for a frame: polars infers and builds a column per field at every depth, which for
    OpenAssistant's trees export took ~190 ms per MB, and turning those columns back into Python trees as
    much again; Python's json reads the same lines at ~16 ms per MB."""
    records, indexes, bad, spanned = record_reader.json_records(data, first_row, first_line)
    return RawTable(path, record_reader.objects_frame(indexes, records), bad), spanned


def _from_records(
    path: Path,
    shape: RecordShape | None,
    records: list[dict],
    indexes: list[int],
    unparsable: list[tuple[int, str, str]],
) -> RawTable:
    """A chunk from the records Python's json parsed; with `shape`, those of another shape set aside
    (`RecordShape.sort`), since polars' typing of the chunk may have hidden them (`RecordShape.suspect`)."""
    if shape is None:
        return RawTable(path, record_reader.records_frame(records, indexes), unparsable)
    good, kept, misshapen = shape.sort(records, indexes)
    as_read = dict(zip(indexes, records, strict=True))
    originals = [as_read[index] for index in kept]
    return RawTable(path, record_reader.records_frame(good, kept), unparsable, misshapen=misshapen, originals=originals)


def _as_parsed(frame: pl.DataFrame | None, shape: RecordShape | None, text: bytes | None = None) -> bool:
    """Whether polars parsed a chunk (`frame` is not None, from the JSON `text`) into a frame that can be taken
    as it is: no conversation or text field in it may have been mistyped (mixer.shapes)."""
    return frame is not None and (shape is None or not shape.suspect(frame, text=text))


def _columns_by_shape(table: RawTable, shape: RecordShape) -> RawTable:
    """A parquet, Arrow, CSV or TSV table has one type per column: only its conversation columns are rebuilt
    (content parts joined, conversations written as JSON text read), so the other columns keep their types."""
    frame = table.frame
    if not shape.suspect(frame, json_text=False):
        return table
    names = [name for name in shape.fields if name in frame.columns]
    good, kept, misshapen = shape.sort(frame.select(names).to_dicts(), frame["__row"].to_list())
    rebuilt = [pl.Series(name, [record[name] for record in good]) for name in names]
    frame = frame.filter(pl.col("__row").is_in(pl.Series(kept, dtype=pl.UInt32).implode())).with_columns(rebuilt)
    return RawTable(table.path, frame, table.unparsable, misshapen=misshapen)


def first_record(path: Path, limit: int = 64 << 20) -> dict | None:
    """The first JSON object of a JSON-lines file (plain or gzip) among its first `limit` bytes; lines that are
    not one (broken, or another JSON value) are passed over, as reading the file reports them."""
    try:
        with _open_binary(path) as fh:
            for raw in fh:
                with contextlib.suppress(ValueError):
                    record = json.loads(raw.removeprefix(UTF8_BOM))
                    if isinstance(record, dict):
                        return record
                if fh.tell() > limit:
                    return None
    except (OSError, EOFError, zlib.error):
        return None
    return None


def first_array_record(path: Path, limit: int = 4 << 20) -> dict | None:
    """The first element of a file that is one JSON array (plain or gzip), when it is an object and ends within
    its first `limit` bytes; None otherwise (JSON lines under a `.json` name, a longer first element)."""
    try:
        with _open_binary(path) as fh:
            head = fh.read(limit).removeprefix(UTF8_BOM).decode("utf-8", errors="ignore").lstrip()
    except (OSError, EOFError, zlib.error):
        return None
    if not head.startswith("["):
        return None
    try:
        record, _ = json.JSONDecoder().raw_decode(head[1:].lstrip())
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _json_lines(
    path: Path, data: bytes, first_row: int = 0, first_line: int = 0, shape: RecordShape | None = None
) -> tuple[RawTable, int]:
    """JSON lines through polars' parser, or line by line when it fails (polars names no line) or when
    `shape` suspects its typing (mixer.shapes). Returns the table and the number of records it spans."""
    try:
        frame = pl.read_ndjson(data, infer_schema_length=None)
    except Exception:
        frame = None
    if _as_parsed(frame, shape, data):
        return RawTable(path, frame.with_row_index("__row", offset=first_row), []), frame.height
    if frame is None:  # a broken line, or a field of no one type: polars names neither
        return _jsonl_slow(path, data, first_row, first_line, shape)
    records, indexes, unparsable, spanned = record_reader.json_records(data, first_row, first_line)
    return _from_records(path, shape, records, indexes, unparsable), spanned


def _chunk_table(
    path: Path,
    text: bytes,
    first_row: int,
    schema: pl.Schema | None,
    columns: Collection[str],
    keys: Collection[str],
    shape: RecordShape | None,
    fresh: Callable[[], tuple[RawTable, int]],
    *,
    array: bool = False,
) -> tuple[RawTable, int, pl.Schema | None]:
    """A chunk of JSON lines (or of an array) parsed with the schema of the chunk before when that is safe
    (mixer.borrowed_schema) and its conversations and texts do not look mistyped, else by `fresh`; with the
    records it spans and the schema the next chunk may borrow (none after a chunk with broken or misshapen
    records)."""
    frame = borrowed_schema.parse_like(text, schema, columns, keys, array=array) if schema is not None else None
    if _as_parsed(frame, shape, text):
        return (
            RawTable(path, frame.with_row_index("__row", offset=first_row), [], text, array=array),
            frame.height,
            schema,
        )
    table, records = fresh()
    whole = not (table.unparsable or table.misshapen)
    return table, records, record_schema(table.frame) if whole else None


def record_schema(frame: pl.DataFrame) -> pl.Schema:
    """The schema of a table's records (without `__row`), for the text after it to borrow. Read off the
    frame's rather than a copy without the column: dropping one runs polars' engine, ~0.2 ms, which is most
    of what a small file costs besides parsing it."""
    return pl.Schema({name: dtype for name, dtype in frame.schema.items() if name != "__row"})


def _newlines(data: bytes, step: int = 1 << 20) -> int:
    """The number of line ends in `data`: `bytes.count` costs ~0.7 ms/MB holding the GIL, which the other
    loading thread waits on; numpy, a megabyte at a time, ~0.15 ms/MB without it."""
    view = np.frombuffer(data, dtype=np.uint8)
    return sum(int(np.count_nonzero(view[i : i + step] == NEWLINE)) for i in range(0, len(view), step))


def _line_blocks(fh: BinaryIO, chunk_bytes: int) -> Iterator[bytes]:
    """The file's bytes in blocks of at least `chunk_bytes` (the last may be shorter), each ending at a line
    end, then one empty block. `read` + `readline` would glue the line's rest on with a copy of the whole
    block, holding the GIL (~0.6 s for 679 MB) while the other loading thread waits for it; here a short
    probe finds where the block's last line ends, so one `pread`, which releases the GIL, reads exactly the
    block. Gzip streams cannot be read at an offset, and Windows has no `pread`; they take the copy."""
    if isinstance(fh, gzip.GzipFile) or not hasattr(os, "pread"):
        while True:
            data = fh.read(chunk_bytes)
            if data and not data.endswith(NEWLINE_BYTE):
                data += fh.readline()
            yield data
            if not data:
                return
    fd, start = fh.fileno(), 0
    while True:
        end = start + chunk_bytes  # the block ends after the first line end at or after byte end - 1
        probe = os.pread(fd, LINE_PROBE, end - 1)
        while probe and NEWLINE_BYTE not in probe:
            end += len(probe)
            probe = os.pread(fd, LINE_PROBE, end - 1)
        if probe:
            end += probe.index(NEWLINE_BYTE)
        data = os.pread(fd, end - start, start)  # to the end of the file when it ends before `end`
        start += len(data)
        yield data
        if not data:
            return


def read_chunks(
    path: Path,
    chunk_bytes: int,
    *,
    header: bool = True,
    columns: Collection[str] = (),
    keys: Collection[str] = (),
    on_read: Callable[[int], None] | None = None,
    objects: bool = False,
    shape: RecordShape | None = None,
) -> Iterator[RawTable]:
    """A JSON-lines file (plain or gzip) as tables of about `chunk_bytes` of text each, cut at line ends, with
    `__row` and line numbers counted from the start of the file: a large file never sits in memory whole.
    With `objects`, a JSON-lines file's records come as Python objects (`_record_objects`). With `shape`, a
    table whose conversations polars may have mistyped is read again record by record (mixer.shapes).
    JSON arrays, parquet and CSV/TSV files come in chunks of their own kind (below); other files whole.
    After the first chunk, each is parsed with the schema of the one before unless that could lose one of the
    `columns` or `keys` an adapter reads (mixer.borrowed_schema). `on_read` hears how many bytes of the file
    each block took (compressed bytes for gzip), for progress."""
    kind = file_kind(path)
    if kind == "json" and path.is_file():
        yield from _array_chunks(path, chunk_bytes, on_read, shape, columns, keys)
        return
    if kind in ("parquet", "arrow") and path.is_file():
        chunks = _parquet_chunks if kind == "parquet" else _arrow_chunks
        for table in chunks(path, chunk_bytes, on_read):
            yield table if shape is None else _columns_by_shape(table, shape)
        return
    if kind in ("csv", "tsv") and path.is_file():
        for table in _delimited_chunks(path, kind, header, chunk_bytes, on_read):
            yield table if shape is None else _columns_by_shape(table, shape)
        return
    if kind != "jsonl":
        yield read_table(path, header=header, on_read=on_read, shape=shape)
        return
    if not path.is_file():
        raise MixerError(f"{path}: file not found")
    rows = lines = taken = 0
    schema: pl.Schema | None = None
    try:
        with _open_binary(path) as fh:
            for data in _line_blocks(fh, chunk_bytes):
                if on_read is not None:
                    now = fh.fileobj.tell() if isinstance(fh, gzip.GzipFile) else taken + len(data)
                    on_read(now - taken)
                    taken = now
                if rows == lines == 0:
                    data = without_bom(path, data)
                if objects:
                    if data.strip():  # a chunk of blank lines has no records
                        table, records = _record_objects(path, data, rows, lines)
                        rows += records
                        yield table
                elif len(data) > 4096 or data.strip():  # a chunk of blank lines has no records
                    fresh = functools.partial(_json_lines, path, data, rows, lines, shape)
                    table, records, schema = _chunk_table(path, data, rows, schema, columns, keys, shape, fresh)
                    rows += records
                    yield table
                lines += _newlines(data)
    except (pl.exceptions.PolarsError, UnicodeDecodeError, OSError, EOFError, zlib.error) as exc:
        raise _unreadable(path, "jsonl", exc) from None


def read_small_files(
    paths: list[Path],
    schema: pl.Schema,
    *,
    array: bool = False,
    columns: Collection[str] = (),
    keys: Collection[str] = (),
    shape: RecordShape | None = None,
) -> list[RawTable] | None:
    """Small JSON-lines files (with `array`, small JSON arrays) parsed as one text with the `schema` of the
    file before them, then split back into a table per file; None when that could lose something (the caller
    reads each file alone).

    polars spends ~0.5 ms per parse however short the text: most of what a file of 100 records costs to read.
    The joined text is parsed as a later chunk of a large file is (mixer.borrowed_schema: a borrowed schema is
    safe for what adapters read), and each table keeps its file's text, so malformed records are quoted from their
    own file. A file is cut from the joined table by its count of records: its lines holding more than JSON
    whitespace (the lines polars skips), or an array's elements (`json_array.whole_array`, which finds the
    commas between them without parsing). When the counts do not add up to the table, or a file has none, the
    files are read alone."""
    try:
        texts = [_read_bytes(path) for path in paths]  # decompressed when gzip, without a byte-order mark
    except (OSError, EOFError, zlib.error):
        return None  # reading each file alone names the one that failed
    if array:
        arrays = [found for found in map(whole_array, texts) if found is not None]
        if len(arrays) < len(texts):
            return None
        counts = [count for _, count in arrays]
        joined = b"".join((b"[", b",".join(body for body, _ in arrays), b"]"))
    else:
        counts = [_records_in(text) for text in texts]
        if not all(counts):
            return None
        joined = b"".join(text if text.endswith(NEWLINE_BYTE) else text + NEWLINE_BYTE for text in texts)
    frame = borrowed_schema.parse_like(joined, schema, columns, keys, array=array)
    if (
        not _as_parsed(frame, shape, joined)
        or frame.height != sum(counts)
        or not _every_field_in_every_file(frame, counts, keys)
    ):
        return None
    tables, offset = [], 0
    for path, text, count in zip(paths, texts, counts, strict=True):
        tables.append(RawTable(path, frame.slice(offset, count).with_row_index("__row"), [], text, array=array))
        offset += count
    return tables


def _every_field_in_every_file(frame: pl.DataFrame, counts: list[int], keys: Collection[str]) -> bool:
    """Whether each file's records hold a value for every field of the borrowed schema, and for every turn key
    the adapter reads (`keys`). One with none in a file may be one the file lacks: read alone, such a file is
    refused with the fields or keys it has (a recipe that must map another name), where the joined parse would
    give its rows nulls there and report each as malformed."""
    held = [pl.col(name).is_not_null() for name in frame.columns]
    for name, dtype in frame.schema.items():
        if isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Struct):
            inner = [f.name for f in dtype.inner.fields if f.name in keys]
            turns = pl.col(name).list
            held += [
                turns.eval(pl.element().struct.field(k).is_not_null()).list.any().alias(f"{name}/{k}") for k in inner
            ]
    if not held:
        return True
    files = (
        pl.Series("__file", range(len(counts)), dtype=pl.UInt32)
        .repeat_by(pl.Series(counts))
        .explode(empty_as_null=True)
    )
    found = frame.select(*held).with_columns(files).group_by("__file").agg(pl.exclude("__file").any())
    return bool(found.drop("__file").select(pl.all_horizontal(pl.all().all())).item())


def _records_in(text: bytes) -> int:
    return sum(1 for line in text.split(NEWLINE_BYTE) if line.strip(b" \t\r"))


def _parquet_chunks(path: Path, chunk_bytes: int, on_read: Callable[[int], None] | None) -> Iterator[RawTable]:
    """A parquet file in tables of about `chunk_bytes` of uncompressed data: a hub export of a few GB (one
    Open-Orca file is 1-2 GB of parquet) would otherwise be decompressed whole. polars' streaming reader hands
    out the batches, at the speed and with the types of reading the file whole (a slice per chunk re-read its
    row group each time: 10x slower on a file of one row group)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        meta = pq.read_metadata(path)
        data_bytes = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        step = max(1, int(meta.num_rows * chunk_bytes / max(data_bytes, 1)))
        if meta.num_rows <= step or not hasattr(pl.LazyFrame, "collect_batches"):  # an older polars: whole
            yield read_table(path, on_read=on_read)
            return
        size, offset = path.stat().st_size, 0
        for frame in pl.scan_parquet(path).collect_batches(chunk_size=step):
            if on_read is not None:
                on_read(size * frame.height // meta.num_rows)
            yield RawTable(path, frame.with_row_index("__row", offset=offset), [])
            offset += frame.height
    except (pl.exceptions.PolarsError, pa.ArrowException, OSError) as exc:
        raise _unreadable(path, "parquet", exc) from None


def _arrow_batches(path: Path) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """An Arrow IPC file's schema and record batches, memory-mapped: the stream format `datasets` writes (its
    cache files and `save_to_disk` folders), or the file format (Feather v2) other tools write."""
    import pyarrow as pa

    source = pa.memory_map(str(path))
    try:
        reader = pa.ipc.open_file(source)
        return reader.schema, (reader.get_batch(i) for i in range(reader.num_record_batches))
    except pa.ArrowInvalid:  # no file footer: the stream format
        source.seek(0)
        stream = pa.ipc.open_stream(source)
        return stream.schema, iter(stream)


def _arrow_frame(schema: pa.Schema, batches: list[pa.RecordBatch]) -> pl.DataFrame:
    import pyarrow as pa

    frame = pl.from_arrow(pa.Table.from_batches(batches, schema=schema.remove_metadata()))
    assert isinstance(frame, pl.DataFrame)
    return frame


def _arrow_pieces(batches: Iterator[pa.RecordBatch], chunk_bytes: int) -> Iterator[tuple[list[pa.RecordBatch], int]]:
    """Record batches in groups of about `chunk_bytes` (their bytes with each group): gathered when small
    (`datasets` writes 1,000 rows a batch), cut when larger (polars writes a frame as one batch). The batches are
    memory-mapped, so a cut costs no copy."""
    group: list[pa.RecordBatch] = []
    group_bytes = 0
    for batch in batches:
        step = max(1, batch.num_rows * chunk_bytes // max(1, batch.nbytes))
        for start in range(0, batch.num_rows, step):
            piece = batch.slice(start, step)
            group.append(piece)
            group_bytes += batch.nbytes * piece.num_rows // batch.num_rows
            if group_bytes >= chunk_bytes:
                yield group, group_bytes
                group, group_bytes = [], 0
    if group:
        yield group, group_bytes


def _arrow_chunks(path: Path, chunk_bytes: int, on_read: Callable[[int], None] | None) -> Iterator[RawTable]:
    """An Arrow file in tables of about `chunk_bytes`, as parquet's are."""
    import pyarrow as pa

    size, reported, offset = path.stat().st_size, 0, 0
    try:
        schema, batches = _arrow_batches(path)
        for pieces, piece_bytes in _arrow_pieces(batches, chunk_bytes):
            frame = _arrow_frame(schema, pieces)
            if on_read is not None:  # the batches' bytes stand for the file's: IPC stores them uncompressed
                step = min(piece_bytes, size - reported)
                on_read(step)
                reported += step
            yield RawTable(path, frame.with_row_index("__row", offset=offset), [])
            offset += frame.height
        if offset == 0:  # a file of no rows still says, by its columns, what it holds
            yield RawTable(path, _arrow_frame(schema, []).with_row_index("__row"), [])
        if on_read is not None and size > reported:
            on_read(size - reported)
    except (pl.exceptions.PolarsError, pa.ArrowException, OSError) as exc:
        raise _unreadable(path, "arrow", exc) from None


def _csv_options(kind: str, header: bool, quoted: bool) -> dict:
    """How CSV and TSV files are read, whole or in batches: every field as text, ragged rows an error, TSV
    unquoted unless it quotes as CSV does (mixer.tsv_quoting: FLAN CoT fields hold bare quotes)."""
    return {
        "separator": "\t" if kind == "tsv" else ",",
        "has_header": header,
        "quote_char": '"' if quoted else None,
        "infer_schema": False,
        "truncate_ragged_lines": False,
    }


def _named(frame: pl.DataFrame, header: bool) -> pl.DataFrame:
    """Columns of a headerless file are column_1..N, whatever the polars version's default is."""
    if not header:
        frame.columns = [f"column_{i}" for i in range(1, frame.width + 1)]
    return frame


def _quoted(path: Path, kind: str) -> bool:
    """Whether a CSV or TSV file's fields may be in quotes: a CSV's always, a TSV's when it quotes as CSV does,
    judged from its first SNIFF_BYTES of text (mixer.tsv_quoting)."""
    if kind == "csv":
        return True
    with _open_binary(path) as fh:
        head = fh.read(SNIFF_BYTES + 1)
    return quotes_like_csv(head[:SNIFF_BYTES].removeprefix(UTF8_BOM), complete=len(head) <= SNIFF_BYTES)


def text_size(path: Path) -> int:
    """About how many bytes of text a file holds: a gzip file's trailer records its size (modulo 4 GiB, so
    never taken below the compressed size)."""
    size = path.stat().st_size
    if not _gzipped(path) or size < 18:
        return size
    with open(path, "rb") as fh:
        fh.seek(-4, os.SEEK_END)
        return max(size, int.from_bytes(fh.read(4), "little"))


def _delimited_chunks(
    path: Path, kind: str, header: bool, chunk_bytes: int, on_read: Callable[[int], None] | None
) -> Iterator[RawTable]:
    """A CSV or TSV file (plain or gzip) in tables of about `chunk_bytes` of text, from polars' streaming
    reader (a quoted field may span lines, so the file cannot be cut at line ends by hand). A file of at most
    one chunk is read whole."""
    size, text = path.stat().st_size, text_size(path)
    if text <= chunk_bytes:
        yield read_table(path, header=header, on_read=on_read)
        return
    offset = heard = 0
    quoted = False
    try:
        with _open_binary(path) as fh:
            sample = without_bom(path, fh.read(1 << 20))  # also refuses UTF-16/32; polars skips a UTF-8 mark
        bytes_per_line = len(sample) / max(1, sample.count(NEWLINE_BYTE))
        quoted = _quoted(path, kind)
        batches = pl.scan_csv(path, **_csv_options(kind, header, quoted)).collect_batches(
            chunk_size=max(1, int(chunk_bytes / bytes_per_line))
        )
        for frame in batches:
            if on_read is not None:  # estimated from the sample's line length, in file bytes, never past the end
                now = min(size, int((offset + frame.height) * bytes_per_line * size / text))
                on_read(max(0, now - heard))
                heard = max(heard, now)
            yield RawTable(path, _named(frame, header).with_row_index("__row", offset=offset), [])
            offset += frame.height
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise _unreadable(path, kind, exc) from None
    except (pl.exceptions.PolarsError, OSError) as exc:
        try:
            where = _first_bad_line(path, _csv_options(kind, header, quoted)["separator"], quoted)
        except (EOFError, zlib.error, gzip.BadGzipFile) as damaged:
            raise _unreadable(path, kind, damaged) from None
        raise _unreadable(path, kind, exc, where) from None


def _array_chunks(
    path: Path,
    chunk_bytes: int,
    on_read: Callable[[int], None] | None,
    shape: RecordShape | None = None,
    columns: Collection[str] = (),
    keys: Collection[str] = (),
) -> Iterator[RawTable]:
    """A JSON array in tables of about `chunk_bytes` of its elements (mixer.json_array), so that a large
    export is never parsed whole; a `.json` file that is not one array (JSON lines under that name) is read
    whole, as before. Chunks after the first borrow the schema of the one before, as JSON lines do
    (mixer.borrowed_schema): 33 instead of 57 ms per 16 MB of ShareGPT, 25 instead of 42 of Alpaca. A chunk
    cut at a guessed separator that does not parse is cut again (`ArrayChunks.rescan`)."""
    rows = taken = 0
    schema: pl.Schema | None = None
    try:
        with _open_binary(path) as fh:
            first = without_bom(path, fh.read(chunk_bytes))
            if not starts_an_array(first):
                yield read_table(path, on_read=on_read, shape=shape)
                return
            chunks = ArrayChunks(fh, chunk_bytes, first)
            for text in chunks:
                if on_read is not None:
                    now = fh.fileobj.tell() if isinstance(fh, gzip.GzipFile) else fh.tell()
                    on_read(now - taken)
                    taken = now
                fresh = functools.partial(_array_table, path, text, rows, shape)
                try:
                    table, elements, schema = _chunk_table(
                        path, text, rows, schema, columns, keys, shape, fresh, array=True
                    )
                except pl.exceptions.PolarsError:
                    if not chunks.guessed:
                        raise
                    chunks.rescan()  # cut inside an element: the chunk is cut again by the scan
                    continue
                yield table
                rows += elements
    except NotAnArray as exc:
        raise _bad_array(path, str(exc)) from None
    except pl.exceptions.PolarsError as exc:
        raise _bad_array(path, _first_bad_line(path, None) or str(exc).splitlines()[0]) from None
    except (UnicodeDecodeError, OSError, EOFError, zlib.error) as exc:
        raise _unreadable(path, "json", exc) from None


def _array_table(path: Path, text: bytes, first_row: int, shape: RecordShape | None) -> tuple[RawTable, int]:
    """A JSON array's elements parsed by polars, or by Python's json when `shape` suspects polars' typing or
    polars finds no one type for a field (it refuses such arrays where it types lines as text). Returns the
    table and the number of elements."""
    try:
        frame = pl.read_json(text, infer_schema_length=None)
    except pl.exceptions.PolarsError:
        frame = None
    if _as_parsed(frame, shape, text):
        return RawTable(path, frame.with_row_index("__row", offset=first_row), []), frame.height
    try:
        records = json.loads(text)
    except ValueError as exc:
        raise pl.exceptions.ComputeError(str(exc)) from None  # reported as the array's first bad line
    if not all(isinstance(record, dict) for record in records):
        raise pl.exceptions.ComputeError("an element is not a JSON object")
    indexes = list(range(first_row, first_row + len(records)))
    return _from_records(path, shape, records, indexes, []), len(records)


def _bad_array(path: Path, reason: str) -> MixerError:
    return MixerError(f"{path}: cannot parse JSON array: {reason}", "validate the file with `python -m json.tool`")


def _unreadable(path: Path, kind: str, exc: BaseException, where: str | None = None) -> MixerError:
    """The error for a file that cannot be read at all. A gzip file that ends early (an interrupted download)
    raises EOFError, which the command line would otherwise report as a bare "Aborted!"."""
    if isinstance(exc, EOFError | zlib.error | gzip.BadGzipFile):
        return MixerError(
            f"{path}: cannot read {kind} file: the gzip data is damaged or cut short ({exc})",
            "download or copy the file again; `gzip -t FILE` checks it",
        )
    return MixerError(f"{path}: cannot read {kind} file: {where or str(exc).splitlines()[0]}")


def _first_bad_line(path: Path, separator: str | None, quoted: bool = True) -> str | None:
    """Where a file polars could not read goes wrong, since its errors name no line: the first byte that is
    not UTF-8, or (CSV/TSV, `separator` given) the first row with more fields than the first row, or (`quoted`)
    the first quote it could not read. The file is read line by line: this runs on files of any size, after
    polars failed on them."""
    with _open_binary(path) as fh:
        for number, line in enumerate(fh, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                return f"line {number}: {record_reader.not_utf8(line, exc.start)}"
    if separator is None:
        return None
    quoting = csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE
    with _open_binary(path) as fh, io.TextIOWrapper(fh, encoding="utf-8-sig", newline="") as text:
        reader = csv.reader(text, delimiter=separator, quoting=quoting)
        width = None
        for fields in reader:
            if fields and width is None:
                width = len(fields)
            elif width is not None and len(fields) > width:
                return f"line {reader.line_num}: {len(fields)} fields, where the first row has {width}"
    return None if quoting == csv.QUOTE_NONE else _bad_quote(path, separator)


def _bad_quote(path: Path, separator: str) -> str | None:
    """A quote polars could not read: one never closed (the rest of the file read as one field), or text after
    a closing quote. polars quotes the field in its error, newlines and all, and names no line."""
    with _open_binary(path) as fh, io.TextIOWrapper(fh, encoding="utf-8-sig", newline="") as text:
        reader = csv.reader(text, delimiter=separator, strict=True)
        starts = 1
        try:
            for _ in reader:
                starts = reader.line_num + 1
        except csv.Error as exc:
            if "unexpected end of data" in str(exc):
                return f"line {starts}: a quoted field starts here and is never closed"
            return f"line {reader.line_num}: text after a quoted field's closing quote"
    return None


def read_table(
    path: Path, *, header: bool = True, on_read: Callable[[int], None] | None = None, shape: RecordShape | None = None
) -> RawTable:
    """Load one file. `header=False` is for headerless TSVs such as the FLAN CoT files; `shape` as in
    `read_chunks`."""
    kind = file_kind(path)
    if not path.is_file():
        raise MixerError(f"{path}: file not found")
    if on_read is not None:
        on_read(path.stat().st_size)  # read whole: its bytes count at once
    quoted = kind == "csv"
    try:
        if kind == "parquet":
            table = RawTable(path, pl.read_parquet(path).with_row_index("__row"), [])
            table = table if shape is None else _columns_by_shape(table, shape)
        elif kind == "arrow":
            (table,) = _arrow_chunks(path, WHOLE, None)
            table = table if shape is None else _columns_by_shape(table, shape)
        elif kind in ("csv", "tsv"):
            data = _read_bytes(path)
            quoted = quoted or quotes_like_csv(data)
            frame = pl.read_csv(data, **_csv_options(kind, header, quoted))
            table = RawTable(path, _named(frame, header).with_row_index("__row"), [])
            table = table if shape is None else _columns_by_shape(table, shape)
        elif kind == "jsonl":
            table, _ = _json_lines(path, _read_bytes(path), shape=shape)
        else:  # json: an array of objects (Alpaca, ShareGPT exports) or JSON lines misnamed .json
            data = _read_bytes(path)
            if data.lstrip()[:1] == b"[":
                try:
                    table, _ = _array_table(path, data, 0, shape)
                except Exception as exc:
                    raise _bad_array(path, _first_bad_line(path, None) or str(exc).splitlines()[0]) from None
            else:
                table, _ = _json_lines(path, data, shape=shape)
    except MixerError:
        raise
    except (pl.exceptions.PolarsError, UnicodeDecodeError, OSError, EOFError, zlib.error) as exc:
        where = None
        if kind in ("csv", "tsv") and isinstance(exc, pl.exceptions.PolarsError):
            where = _first_bad_line(path, _csv_options(kind, header, quoted)["separator"], quoted)
        raise _unreadable(path, kind, exc, where) from None
    if "__row" not in table.frame.columns:
        table.frame = table.frame.with_row_index("__row")
    return table
