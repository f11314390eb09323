"""JSON records read one at a time with Python (orjson first, then json): for lines polars refuses (it names
no line), for chunks whose typing `mixer.shapes` suspects, and for records nested too deeply for a frame. Each
record keeps the index it has on polars' path, so ids do not shift whichever way its chunk is read."""

from __future__ import annotations

import json

import orjson
import polars as pl

from mixer.shapes import json_kind, value_text

NEWLINE_BYTE = b"\n"


def not_utf8(line: bytes, at: int) -> str:
    return f"not UTF-8: byte 0x{line[at]:02X} at byte {at + 1} of the line"


def fast_record(raw: bytes) -> dict | None:
    """A line that orjson reads as a JSON object, read by it: ~1.7-2x faster than Python's json on the records
    that go this way (OpenAssistant's trees, lines polars refuses), with the same result. None for anything
    else, which Python's json then reads or names: NaN, lone surrogates and integers past 64 bits, which orjson
    refuses, and every error message users see come from there."""
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def _python_record(raw: bytes) -> tuple[dict | None, tuple[str, str] | None]:
    """A line read by Python's json: (the record, None), or (None, (why it is not one, the line to quote))."""
    try:
        line = raw.decode("utf-8").removesuffix("\r")
    except UnicodeDecodeError as exc:  # replacing the bytes would change the text without a word
        return None, (not_utf8(raw, exc.start), raw.decode("utf-8", errors="replace")[:2000])
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        # json ends some messages with "at" for its own ": line 1 column 5" ("Unterminated string starting at")
        return None, (f"invalid JSON: {exc.msg.removesuffix(' at')} at column {exc.colno}", line[:2000])
    except RecursionError:  # about 1,000 levels before Python 3.13, about 10,000 from it
        return None, ("nested more deeply than Python's json reads", line[:2000])
    if not isinstance(record, dict):
        return None, (f"expected a JSON object, got {json_kind(record)}", line[:2000])
    return record, None


def json_records(
    data: bytes, first_row: int = 0, first_line: int = 0
) -> tuple[list[dict], list[int], list[tuple[int, str, str]], int]:
    """Parse line by line (`fast_record`, else Python's json): (records, their indexes, unparsable lines,
    records spanned). Records keep the index they have on polars' path, so ids do not shift."""
    records, indexes, bad = [], [], []
    index = 0
    # split at line feeds alone: str.splitlines also splits at U+2028, NEL and others, which JSON strings may
    # hold unescaped, and would report one good record as several bad ones
    for lineno, raw in enumerate(data.split(NEWLINE_BYTE), start=first_line + 1):
        if not raw.strip():
            continue
        index += 1
        record = fast_record(raw)
        if record is None:  # Python's json reads what orjson refuses, or says what is wrong with the line
            record, problem = _python_record(raw)
            if problem is not None:
                bad.append((lineno, *problem))
                continue
        records.append(record)
        indexes.append(first_row + index - 1)
    return records, indexes, bad, index


def objects_frame(rows: list[int] | pl.Series, records: list[dict]) -> pl.DataFrame:
    """(__row, __record): records as Python objects (polars' Object type), which `load._malformed` quotes."""
    return pl.DataFrame([pl.Series("__row", rows, dtype=pl.UInt32), pl.Series("__record", records, dtype=pl.Object)])


def records_frame(records: list[dict], indexes: list[int]) -> pl.DataFrame:
    """Records Python's json parsed, as the frame polars makes of their JSON lines: the types a chunk of the
    same records gets on polars' own path. A field polars finds no one type for is taken as text
    (`_field_as_text`)."""
    row = pl.Series("__row", indexes, dtype=pl.UInt32)
    if not records:
        return pl.DataFrame([row])
    try:
        frame = _json_frame(records)
    except pl.exceptions.PolarsError:
        names = dict.fromkeys(name for record in records for name in record)
        frame = pl.concat([_field_as_text(name, [r.get(name) for r in records]) for name in names], how="horizontal")
    if frame.height != row.len():  # records without a field (`{}`) make no rows of their own
        return pl.DataFrame([row])
    return frame.with_columns(row).select("__row", pl.exclude("__row"))


def _json_frame(records: list[dict]) -> pl.DataFrame:
    return pl.read_ndjson(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in records).encode(), infer_schema_length=None
    )


def _field_as_text(name: str, values: list) -> pl.DataFrame:
    """One field of a chunk as polars types it, or, when polars finds no one type (a list in one record and a
    number in the next), as text: each value its JSON, as polars writes a number or object in a field it types
    as text. Such a field (metadata, scores) refused the whole file before, even when no adapter reads it."""
    try:
        return _json_frame([{name: value} for value in values])
    except pl.exceptions.PolarsError:
        return pl.DataFrame({name: pl.Series([value_text(value) for value in values], dtype=pl.String)})
