"""A chunk of JSON parsed with the schema of the chunk before it, when that loses nothing an adapter reads.

Inferring a schema costs a second pass over the text; later chunks of a file borrow the first one's
(`parse_like`), and chunks of conversations go through pyarrow's reader with it (`arrow_json`). Anything the
borrowed schema could drop or mistype makes `parse_like` answer None, and the caller parses the chunk fresh.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator
from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:
    import pyarrow as pa

JSON_BLOCK = 2 << 20  # pyarrow's JSON blocks: a line longer than this is refused by it, then read by polars


def _fields(schema: pl.Schema) -> Iterator[tuple[str, pl.DataType]]:
    """Every field of a schema, nested ones included, with its type inside any lists."""
    pending = list(schema.items())
    while pending:
        name, dtype = pending.pop()
        while isinstance(dtype, (pl.List, pl.Array)):
            dtype = dtype.inner
        yield name, dtype
        if isinstance(dtype, pl.Struct):
            pending += [(f.name, f.dtype) for f in dtype.fields]


def _holds_key(data: bytes, names: Collection[str], *, valued: bool = False) -> bool:
    """Whether JSON text has any of `names` as a key (with `valued`, with a value other than null), in one pass
    over it whatever the number of names. A key is a quoted name followed by a colon, which no string value can
    be (ShareGPT's "from": "system")."""
    if not names:
        return False
    alternatives = b"|".join(re.escape(name.encode()) for name in sorted(names))
    # the lookahead takes the blanks itself: `\s*(?!null)` would give one back and match `: null`
    return re.search(b'"(?:%s)"\\s*:%s' % (alternatives, b"(?!\\s*null)" if valued else b""), data) is not None


def parse_like(
    data: bytes, schema: pl.Schema, columns: Collection[str], keys: Collection[str], *, array: bool = False
) -> pl.DataFrame | None:
    """`data` (JSON lines, or with `array` a JSON array) parsed with the schema of the chunk before it, or None
    when that could lose something.

    Inferring a schema costs a second pass over the text (three times the parse for Alpaca-like files). A
    borrowed schema is safe for what an adapter reads: a value of another type is an error (a fresh parse
    follows), and text fields take numbers and objects as their JSON text as inference does for mixed chunks.
    What the adapter reads but the schema lacks must not be dropped: the record `columns` it maps (Alpaca's
    optional `system` and `id`) are parsed as extra text columns, and a chunk where one holds a value is parsed
    fresh; the `keys` it reads inside values (the role and content keys of turns) are looked for in the raw
    text. Only fields no adapter reads are left out, and those are parsed again when a malformed record is
    quoted (`whole_records`). polars' array reader is laxer with a schema than its lines reader: it truncates
    1.5 into an integer column and reads true as 1.0 in a float one, so arrays borrow only schemas without
    numbers."""
    fields = list(_fields(schema))
    if array and any(dtype.is_numeric() for _, dtype in fields):
        return None
    if _holds_key(data, set(keys) - {name for name, _ in fields}):
        return None
    # a field no record before had a value for is typed null, and polars reads the values of such a field
    # inside a list of records (a turn's role) as null without a word: parse fresh when one has a value here
    if _holds_key(data, {name for name, dtype in fields if dtype == pl.Null}, valued=True):
        return None
    unseen_columns = sorted(set(columns) - set(schema.names()))
    schema = pl.Schema({**schema, **dict.fromkeys(unseen_columns, pl.String)})
    nested = any(dtype.is_nested() for dtype in schema.dtypes())
    frame = arrow_json(data, schema) if nested and not array else None
    if frame is None:
        try:
            frame = pl.read_json(data, schema=schema) if array else pl.read_ndjson(data, schema=schema)
        except Exception:
            return None
    if not unseen_columns:
        return frame
    if frame.select(pl.any_horizontal(pl.col(unseen_columns).is_not_null().any())).item():
        return None  # a mapped column appears: parse fresh, as if this were a first chunk
    return frame.drop(unseen_columns)


def arrow_json(data: bytes, schema: pl.Schema) -> pl.DataFrame | None:
    """JSON lines of nested records (conversations) parsed by pyarrow with exactly `schema`, or None when a
    value does not fit it. pyarrow parses ShareGPT-like lines in about half the CPU time of polars (43 against
    98 ms per 16 MB on one core); flat records polars parses faster. pyarrow refuses any value of another type
    than the schema's (a number in a text field, where polars writes its JSON), so whatever it accepts, polars
    would have read the same, and whatever it refuses goes to polars."""
    import pyarrow as pa
    import pyarrow.json as pa_json

    try:
        fields = pl.DataFrame(schema=schema).to_arrow().schema
        explicit = pa.schema([pa.field(f.name, _json_type(f.type)) for f in fields])
        options = pa_json.ParseOptions(explicit_schema=explicit, unexpected_field_behavior="ignore")
        blocks = pa_json.ReadOptions(block_size=JSON_BLOCK)
        table = pa_json.read_json(pa.BufferReader(data), read_options=blocks, parse_options=options)
    # AttributeError: a pyarrow older than the view types (< 16) has no test for them; polars reads the chunk
    except (pa.ArrowException, ValueError, TypeError, OverflowError, AttributeError):
        return None
    return pl.from_arrow(table)  # type: ignore[return-value]


def _json_type(dtype: pa.DataType) -> pa.DataType:
    """The arrow type pyarrow's JSON reader builds for `dtype`: it takes no large or view types."""
    import pyarrow as pa

    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_string_view(dtype):
        return pa.string()
    lists = (pa.types.is_list, pa.types.is_large_list, pa.types.is_list_view, pa.types.is_large_list_view)
    if any(is_list(dtype) for is_list in lists) or pa.types.is_fixed_size_list(dtype):
        return pa.list_(_json_type(dtype.value_type))
    if pa.types.is_struct(dtype):
        return pa.struct([pa.field(f.name, _json_type(f.type)) for f in dtype])
    return dtype
