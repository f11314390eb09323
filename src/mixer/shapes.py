"""Fields that hold conversations or text, checked record by record when a chunk of JSON mixes their shapes.

polars gives a field one type per chunk. When a ShareGPT `conversations` is a list in most records and text in
one, it types the whole field as text and writes the lists as their JSON; when one turn's content is a list of
OpenAI content parts (`[{"type": "text", "text": ...}]`), that content becomes the JSON of the parts. The first
refused the whole file, and the second put JSON into the training text without a word.

So after polars parses a chunk, `RecordShape.suspect` looks for what only such mixing leaves: a conversation
field of another type than a list of turn objects, or a role or content that is not text, or text that starts
like JSON and parses as a list or an object. Those chunks alone are read again with Python's json, where each
record keeps its own shape (`RecordShape.sort`): a record of the wrong shape becomes a malformed row with its
reason (so `on_error` decides), and text content parts are joined by newlines (as vLLM does for a model that
takes text). A chunk with none of this costs one vectorised check.

A flat text field (an Alpaca `output`) that is a list in one record and text in the others is typed as text
too, and the list's JSON was trained as the reply. polars' text of it cannot be told from a text that looks
like a list (Code-Alpaca has many), so such a chunk is found in its JSON: a text field's name followed by `[`.
That search runs only on chunks where one of those fields has a text starting with `[`.
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import polars as pl

Misshapen = tuple[int, str, str]  # (record index in its file, reason, the record as JSON)


@dataclass(frozen=True)
class RecordShape:
    """Where a format keeps its conversations: the record fields, the keys of a turn (none when a turn is its
    text, as in LIMA's alternating turns), and the fields that may be plain text instead (a preference pair's
    prompt or reply) with the role such a text stands for; and its flat fields that must be text (`texts`)."""

    fields: tuple[str, ...]
    role_key: str | None
    content_key: str | None
    text_roles: dict[str, str] = field(default_factory=dict)
    texts: tuple[str, ...] = ()

    def suspect(self, frame: pl.DataFrame, json_text: bool = True, text: bytes | None = None) -> bool:
        """Whether polars' typing of this chunk may hide a record of another shape, or content parts.
        `json_text`: the frame was parsed from JSON, so a text may be a nested value polars wrote as JSON;
        `text`: that JSON, where a list in a flat text field is looked for."""
        if text is not None and self._list_in_texts(frame, text):
            return True
        for name in self.fields:
            if name in frame.columns and self._field_suspect(frame.get_column(name), json_text):
                return True
        return False

    def _field_suspect(self, column: pl.Series, json_text: bool) -> bool:
        dtype = column.dtype
        if dtype == pl.Null:
            return False
        if dtype == pl.String:  # text may be turns written as JSON (a CSV holds no list): records decide
            return column.name not in self.text_roles or _parses_as_json_container(column)
        if self.role_key is None and isinstance(dtype, pl.List) and dtype.inner in (pl.String, pl.Null):
            return json_text and _parses_as_json_container(column.explode(empty_as_null=True))
        if not (isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Struct)) or self.role_key is None:
            return True
        keys = {f.name: f.dtype for f in dtype.inner.fields}
        for key in (self.role_key, self.content_key):
            if keys.get(key, pl.Null) not in (pl.String, pl.Null):
                return True
        turns = column.explode(empty_as_null=True)
        texts = [turns.struct.field(key) for key in (self.role_key, self.content_key) if keys.get(key) == pl.String]
        return json_text and any(_parses_as_json_container(text) for text in texts)

    def _list_in_texts(self, frame: pl.DataFrame, text: bytes) -> bool:
        """Whether a flat text field of some record in `text` is a list, which polars wrote as its JSON. A
        chunk with no "[" at all has none (~0.05 ms per MB); else only one where such a field has a text
        starting with "[" (~0.17 ms per MB) has its JSON searched (~0.7 ms per MB, holding the GIL)."""
        schema = frame.schema
        if any(isinstance(schema.get(name), pl.List) for name in self.texts):
            return True  # a list in every record of the chunk: each is malformed, as one among texts would be
        names = [name for name in self.texts if schema.get(name) == pl.String]
        if not names or b"[" not in text:
            return False
        bracketed = frame.select(pl.any_horizontal(pl.col(name).str.starts_with("[") for name in names).any())
        return bool(bracketed.item()) and _list_value(tuple(names)).search(text) is not None

    def sort(self, records: list[dict], indexes: list[int]) -> tuple[list[dict], list[int], list[Misshapen]]:
        """The records of the right shape (content parts joined into text) with their indexes, and the others
        as malformed rows."""
        good, kept, misshapen = [], [], []
        for record, index in zip(records, indexes, strict=True):
            listed = next((name for name in self.texts if isinstance(record.get(name), list)), None)
            reason = None if listed is None else f"field {listed!r} is a list, expected text"
            reshaped: dict[str, Any] = {}
            for name in self.fields if reason is None else ():
                if name in record:
                    reshaped[name], reason = self._reshaped(name, record[name])
                    if reason is not None:
                        break
            if reason is None:
                good.append({**record, **reshaped})
                kept.append(index)
            else:  # quoted whole, as it was: quarantine keeps what it sets aside (a parquet value JSON has no
                # type for, bytes or a date, as its text)
                misshapen.append((index, reason, json.dumps(record, ensure_ascii=False, default=json_text)))
        return good, kept, misshapen

    def _written_turns(self, name: str, text: str) -> list | None:
        """The list a conversation written as its JSON text holds: CSV can hold no list, and some exports encode
        conversations twice. Where a text is allowed (a preference reply), only a list of turn objects is taken
        for one: a reply may be JSON."""
        if not text.lstrip().startswith("["):
            return None
        try:
            value = json.loads(text)
        except ValueError:
            return None
        if not isinstance(value, list):
            return None
        if name in self.text_roles and not (value and all(isinstance(t, dict) and self.role_key in t for t in value)):
            return None
        return value

    def _reshaped(self, name: str, value: Any) -> tuple[Any, str | None]:
        """The field's value as a list of turns, or why it cannot be one. A text where text is allowed becomes
        the one turn it stands for, as the adapter reads it, so a chunk mixing both is typed as lists."""
        turn_kind = "texts" if self.role_key is None else f"{{{self.role_key}, {self.content_key}}}"
        expected = f"a list of {turn_kind}" + (" or text" if name in self.text_roles else "")
        if value is None:
            return value, None
        if isinstance(value, str) and (turns := self._written_turns(name, value)) is not None:
            value = turns
        if isinstance(value, (str, int, float)) and name in self.text_roles:  # a number is text, as polars reads it
            return [{self.role_key: self.text_roles[name], self.content_key: value_text(value)}], None
        if not isinstance(value, list):
            return value, f"field {name!r} is {json_kind(value)}, expected {expected}"
        if self.role_key is None:
            for number, turn in enumerate(value, start=1):
                if isinstance(turn, (list, dict)):
                    return value, f"turn {number} of {name!r} is {json_kind(turn)}, expected text"
            return [value_text(turn) for turn in value], None
        turns = []
        for number, turn in enumerate(value, start=1):
            if not isinstance(turn, dict):
                return value, f"turn {number} of {name!r} is {json_kind(turn)}, expected an object"
            role = turn.get(self.role_key)
            if isinstance(role, (list, dict)):
                return value, f"turn {number} of {name!r}: {self.role_key!r} is {json_kind(role)}, expected text"
            content, reason = _content_text(turn.get(self.content_key))
            if reason is not None:
                return value, f"turn {number} of {name!r}: {reason}"
            turns.append({**turn, self.role_key: value_text(role), self.content_key: content})
        return turns, None


@functools.cache
def _list_value(names: tuple[str, ...]) -> re.Pattern[bytes]:
    """A JSON member named one of `names` whose value is a list. Inside a JSON text a quote is escaped, so a
    name written in a text's content (`\\"output\\": [`) has a backslash before its closing quote and is not
    matched."""
    alternatives = b"|".join(re.escape(json.dumps(name, ensure_ascii=False)[1:-1].encode()) for name in names)
    return re.compile(rb'"(?:' + alternatives + rb')"\s*:\s*\[')


def _content_text(content: Any) -> tuple[Any, str | None]:
    """A turn's content as text: OpenAI content parts of type text are joined by newlines; any other part
    (an image, audio) cannot be put into a text mixture and makes the record malformed."""
    if not isinstance(content, (list, dict)):
        return value_text(content), None
    if isinstance(content, dict):
        return None, "content is an object, expected text or a list of content parts"
    texts = []
    for number, part in enumerate(content, start=1):
        if not isinstance(part, dict):
            return None, f"content part {number} is {json_kind(part)}, expected an object"
        kind = part.get("type")
        if kind != "text":
            return None, f"content part {number} is of type {kind!r}; a text mixture takes only 'text' parts"
        if not isinstance(part.get("text"), str):
            return None, f"content part {number} has no text"
        texts.append(part["text"])
    return "\n".join(texts), None


def value_text(value: Any) -> str | None:
    """A JSON value as polars writes it in a field it types as text: text as it is, null as null, a number in
    positional notation, anything else as its JSON. So a record gets the same row whichever path its chunk
    takes."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return _float_text(value)
    return json.dumps(value)


def _float_text(value: float) -> str:
    """A float as polars writes it into text (Rust's `Display`): the shortest digits that read back as the
    same float, never an exponent, no ".0" on a whole number: 2.0 is "2" and 1e-07 is "0.0000001"."""
    text = format(Decimal(repr(value)), "f")
    return text.removesuffix(".0")


def _parses_as_json_container(texts: pl.Series) -> bool:
    """Whether any text may be a list or an object that polars wrote as text. Only texts starting with a
    bracket or brace are looked at, a few per chunk at most in real data. polars writes the strings inside
    such a value without escaping their backslashes or control characters, so its text may not parse: a
    bracketed text that does not is suspect too (reading its chunk record by record costs time, not rows)."""
    candidates = texts.filter(texts.str.starts_with("[") | texts.str.starts_with("{"))
    for text in candidates:
        try:
            if isinstance(json.loads(text), (list, dict)):
                return True
        except ValueError:
            if text.rstrip().endswith("]" if text.startswith("[") else "}"):
                return True
    return False


def json_text(value: object) -> str:
    """A value JSON has no type for (a parquet column's bytes or date), as the text a malformed row quotes: bytes
    as the text they decode to."""
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)


def json_kind(value: Any) -> str:
    """A JSON value's kind in words, for reasons a user reads ("a list", not Python's "list")."""
    if isinstance(value, str):
        return "text"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    if value is None:
        return "null"
    # a parquet or Arrow column of a type JSON does not have
    return "binary data" if isinstance(value, (bytes, bytearray)) else f"a {type(value).__name__}"
