"""Shared building blocks for adapters: field lookup, message structs and conversation checks.

Adapters are vectorised polars expressions over a whole file; a malformed record is not an exception but a
row whose `__reason` says what is wrong, so the caller can error, skip or quarantine by policy.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import PurePath
from typing import Any

import polars as pl

from mixer.adapters.formats import SPECS, Format
from mixer.errors import MixerError
from mixer.shapes import value_text

MESSAGE = pl.Struct({"role": pl.String, "content": pl.String})
MESSAGES = pl.List(MESSAGE)
ROLES = ("system", "user", "assistant")
UNKNOWN_ROLE = "unknown role"  # named by `sft_frame` once the row is known to have one
FIRST_IS_ASSISTANT = "first turn is from the assistant"


@dataclass(frozen=True)
class Context:
    """What an adapter needs to know besides the records: field mapping, options, the file (for errors), and
    what it has already converted of this file in earlier chunks (`seen`: OpenAssistant's leaf messages, so a
    message in two trees of a file is one conversation however the file is cut)."""

    fields: dict[str, str]
    options: dict[str, Any]
    file: str
    seen: set[str] = field(default_factory=set)
    format: str = ""  # the source's format, left out when a missing field's hint names formats that fit
    source: str = ""  # where the recipe declares it (`sources.NAME`): two sources may read one file with other
    # `fields:`
    adds_rows: bool = True  # False for `take: 0`, an evolve block's seed pool, which may be instructions alone

    @property
    def where(self) -> str:
        """How an error names what it is about: the source, whose `format:` or `fields:` is usually the fix."""
        return f"{self.source}: {self.file}" if self.source else self.file


@dataclass(frozen=True)
class Adapter(Format):
    """A format (what it accepts: mixer.adapters.formats) and how its records become canonical rows."""

    convert: Callable[[pl.DataFrame, Context], pl.DataFrame] | None = None


def adapter(name: str, convert: Callable[[pl.DataFrame, Context], pl.DataFrame]) -> Adapter:
    spec = SPECS[name]
    return Adapter(**{f.name: getattr(spec, f.name) for f in fields(Format)}, convert=convert)


def holds_binary(dtype: pl.DataType) -> bool:
    """Whether a parquet or Arrow column's values are or hold bytes: polars panics writing those as JSON."""
    if dtype == pl.Binary:
        return True
    if isinstance(dtype, (pl.List, pl.Array)):
        return holds_binary(dtype.inner)
    return isinstance(dtype, pl.Struct) and any(holds_binary(f.dtype) for f in dtype.fields)


def _utf8(values: pl.Series) -> bool:
    try:
        values.cast(pl.String)
    except pl.exceptions.PolarsError:  # "invalid utf8", whether the cast is strict or not
        return False
    return True


def column(raw: pl.DataFrame, ctx: Context, name: str, required: bool = True) -> pl.Expr:
    """The native column mapped to canonical `name`, as text; a missing optional column reads as null."""
    native = ctx.fields[name]
    if native not in raw.columns:
        if not required:
            return pl.lit(None, dtype=pl.String)
        raise missing_field(raw, ctx, name)
    dtype = raw.schema[native]
    if dtype == pl.String:
        return pl.col(native)
    if dtype == pl.Binary:  # text, as some parquet writers store it without saying so, or other bytes
        if _utf8(raw[native]):
            return pl.col(native).cast(pl.String)
        raise MixerError(
            f"{ctx.where}: field {native!r} holds binary data that is not UTF-8 text, expected text for {name!r}",
            f"decode it to text in the file, or map {name!r} to a text field in the recipe: "
            f"fields: {{{name}: <field>}}",
        )
    if isinstance(dtype, pl.Struct) and not holds_binary(dtype):  # polars encodes a missing object as "null";
        # it cannot encode bytes (it panics), so an object holding some is refused below, as lists are
        return pl.when(pl.col(native).is_not_null()).then(pl.col(native).struct.json_encode())
    if dtype.is_nested():
        raise MixerError(
            f"{ctx.where}: field {native!r} holds {dtype} values, expected text for {name!r}",
            f"map {name!r} to a text field in the recipe: fields: {{{name}: <field>}}",
        )
    if dtype.is_float():
        return number_text(pl.col(native))
    return pl.col(native).cast(pl.String)  # integers, booleans, nulls: their text


def number_text(value: pl.Expr) -> pl.Expr:
    """A float column's values as text, as polars writes a number into a field it types as text: whole
    numbers without ".0", never an exponent (`shapes.value_text`). polars types a field as float for a chunk
    where any record has a fraction, so the id 49 was "49" in one chunk and "49.0" in the next (and an answer
    42 became "42.0" beside a 3.5): a record's text must not depend on its neighbours."""
    return value.map_batches(_float_texts, return_dtype=pl.String)


def _float_texts(values: pl.Series) -> pl.Series:
    """Vectorised for the usual numbers; the few whose cast has an exponent (1e-7, 1e+16) or is minus zero
    are written one by one."""
    values = values.cast(pl.Float64)
    whole = values.is_finite() & (values == values.floor()) & (values.abs() < 2.0**53) & ~_minus_zero(values)
    texts = pl.select(
        pl.when(whole).then(values.cast(pl.Int64, strict=False).cast(pl.String)).otherwise(values.cast(pl.String))
    ).to_series()
    odd = values.is_finite() & (texts.str.contains("e", literal=True) | texts.str.ends_with(".0"))
    if odd.any():
        texts = texts.scatter(odd.arg_true(), [value_text(v) for v in values.filter(odd)])
    return texts.alias(values.name)


def _minus_zero(values: pl.Series) -> pl.Series:
    return (values == 0) & ((1 / values) < 0)


def missing_field(raw: pl.DataFrame, ctx: Context, name: str) -> MixerError:
    """The error for a file without the field canonical `name` is read from: the fields it has, and the
    formats they fit (a ShareGPT file read as `messages` is the usual slip), or how to map the field."""
    native = ctx.fields[name]
    names = [c for c in raw.columns if c != "__row"]
    what = f"no field {native!r}" + (f" for {name!r}" if native != name else "")
    if not names:  # nothing to map a field from: "the file has: " and a `fields:` mapping would say nothing
        return MixerError(
            f"{ctx.where}: {what}; its records have no fields at all (each one is {{}})",
            "check that this is the file you meant, and the step that wrote it",
        )
    if _looks_like_data(names):
        headerless = ", ".join(f"format: {s.name}" for s in SPECS.values() if s.headerless)
        first = ", ".join(_clip(n) for n in names)
        return MixerError(
            f"{ctx.where}: {what}; the first row looks like data, not field names ({first})",
            f"a file without a header row needs a headerless format ({headerless} for FLAN CoT TSVs: question, "
            f"answer, rationale), or add a header row naming the fields",
        )
    head = native.split(".", 1)[0]
    if "." in native and head in names and isinstance(raw.schema[head], pl.Struct):  # `data.question`
        return MixerError(
            f"{ctx.where}: {what} (the file has: {_field_names(names)}); `fields:` names the file's own fields, and "
            f"{head!r} holds an object",
            f"flatten the records first, e.g. jq -c '{{{name}: .{native}}}' (with the other fields) into a new file",
        )
    if (wrapper := _records_inside(raw, names, native)) is not None:
        file = PurePath(ctx.file)
        unwrapped = f"{file.name.split('.')[0]}.records.json"
        return MixerError(
            f"{ctx.where}: {what}; the records are in the list {wrapper!r} of the file's top-level object "
            f"(the file has: {_field_names(names)})",
            "mixer reads a JSON array or JSON lines of records: take the list out and read that file, e.g. "
            f"python -c \"import json; json.dump(json.load(open('{file.name}'))['{wrapper}'], open('{unwrapped}', "
            "'w'))\"",
        )
    if (separator := _other_separator(names, native, ctx.file)) is not None:
        return MixerError(
            f"{ctx.where}: {what}; the file's header is one field, {_clip(names[0])!r}: its fields are separated by "
            f"{separator!r}, and mixer reads a .csv file as separated by commas and a .tsv file by tabs",
            _separator_hint(separator, PurePath(ctx.file)),
        )
    if (blurred := _blurred_name(names, native)) is not None:
        return MixerError(
            f"{ctx.where}: {what}; the file has {blurred!r}, which is {native!r} with spaces or invisible characters",
            f"fix the field's name in the file, or map it in the recipe: fields: {{{name}: {json.dumps(blurred)}}}",
        )
    return MixerError(f"{ctx.where}: {what} (the file has: {_field_names(names)})", _formats_or_mapping(raw, ctx, name))


def _field_names(names: list[str]) -> str:
    """A file's field names for a message, a name with spaces at its ends or characters a terminal does not show
    (`output\\r`, a byte-order mark) quoted and escaped: printed plain, a header's `output\\r` read as the very
    field the message says is missing."""
    return ", ".join(n if n.isprintable() and n == n.strip() else repr(n) for n in names)


def _other_separator(names: list[str], native: str, file: str) -> str | None:
    """The separator of a CSV or TSV file read with the other one (a tab-separated `.csv`) or with one mixer does
    not read (`;`, as spreadsheets write CSV where a comma is the decimal mark): its header is then one field
    that holds every name."""
    if len(names) != 1 or not {".csv", ".tsv"} & set(PurePath(file).suffixes):
        return None
    return next((sep for sep in ("\t", ";", "|", ",") if native in names[0].split(sep)), None)


def _separator_hint(separator: str, file: PurePath) -> str:
    name = file.name
    for wanted, suffix, other in (("\t", ".tsv", ".csv"), (",", ".csv", ".tsv")):
        if separator == wanted and other in file.suffixes:
            return f"name the file {name.replace(other, suffix)}, and its path in the recipe too"
    comma = name.replace(".csv", ".commas.csv").replace(".tsv", ".commas.csv").removesuffix(".gz")
    return (
        f"write it again with commas, e.g. python -c \"import polars as pl; pl.read_csv('{name}', "
        f"separator='{separator}', infer_schema=False).write_csv('{comma}')\", and read that file"
    )


def _blurred_name(names: list[str], native: str) -> str | None:
    """The file's name that is `native` once spaces and unprintable characters are taken out."""
    return next((n for n in names if n != native and "".join(c for c in n if c.isprintable()).strip() == native), None)


def _records_inside(raw: pl.DataFrame, names: list[str], native: str) -> str | None:
    """The field holding a list of records with `native` in them: a file written as one object around its
    records (`{"version": ..., "data": [...]}`, as SQuAD and some exports are), which `datasets` reads with
    `field="data"`."""
    for name in names:
        dtype = raw.schema[name]
        inner = dtype.inner if isinstance(dtype, pl.List) else None
        if isinstance(inner, pl.Struct) and native in {f.name for f in inner.fields}:
            return name
    return None


def type_words(dtype: pl.DataType) -> str:
    """A field's type for a message. polars types a field that no record gives a value (or a turn) as Null, a
    name that means nothing to a user."""
    if dtype == pl.Null:
        return "empty (null) in every record"
    if dtype == pl.List(pl.Null):
        return "an empty list (or a list of nulls) in every record"
    return str(dtype)


def turn_keys_error(ctx: Context, keys: set[str], role_key: str, content_key: str, hint: str) -> MixerError:
    """The error for turns that lack a key the format reads in every record of a chunk: polars cannot take a key
    that no turn has (a traceback), so the adapter says which keys the turns have instead."""
    return MixerError(
        f"{ctx.where}: conversation turns have keys {sorted(keys)}, expected {role_key!r} and {content_key!r}", hint
    )


def wrong_type(raw: pl.DataFrame, ctx: Context, name: str, expected: str) -> MixerError:
    """The error for a field of another type than the format reads (LIMA's texts read as ShareGPT turns)."""
    native = ctx.fields[name]
    return MixerError(
        f"{ctx.where}: field {native!r} is {type_words(raw.schema[native])}, expected {expected}",
        _formats_or_mapping(raw, ctx, name),
    )


KIND_NOTES = {"preference": " (the data of a dpo stage)", "prompts": " (no replies: seeds of an evolve block)"}


def _formats_or_mapping(raw: pl.DataFrame, ctx: Context, name: str) -> str:
    """The formats the file fits, or the `fields:` mapping that reads it: with the file's field of that name
    in another case when it has one (WizardLM's test set writes `Instruction`), else a placeholder."""
    native = ctx.fields[name].lower()
    cased = next((c for c in raw.columns if c.lower() == native and c != ctx.fields[name]), None)
    column = cased or "<one of the file's fields>"
    mapping = f"map it in the recipe: fields: {{{name}: {column}}}"
    fitting = fitting_formats(raw.schema, leave_out=ctx.format, adds_rows=ctx.adds_rows, mapping=ctx.fields)
    fits = [f"format: {f}" + KIND_NOTES.get(SPECS[f].kind, "") for f in fitting]
    return f"its fields are those of {' or '.join(fits)}; or {mapping}" if fits else mapping


def fitting_formats(
    schema: pl.Schema, leave_out: str = "", *, adds_rows: bool = True, mapping: dict[str, str] | None = None
) -> list[str]:
    """Formats whose required fields a file has, with conversations of the kind the format reads: a list of
    turn objects, of texts (LIMA), or text where a preference pair allows it. A field is looked for by its
    default name, or by the source's `mapping` where that names the same canonical field: a seed file of
    WizardLM's `Instruction`s read as alpaca with `fields: {instruction: Instruction}` fits `prompts` as mapped.
    `prompts` is left out for a source that `adds_rows` (prompts may only seed an evolve block: validation
    refuses them elsewhere), and is the fit only when no format with replies is."""
    mapping = mapping or {}
    fits = []
    for spec in SPECS.values():
        if spec.name == leave_out or spec.headerless or not spec.required:
            continue
        if spec.kind == "prompts" and adds_rows:
            continue
        if all(_fits(spec, name, schema.get(mapping.get(name, spec.fields[name]))) for name in spec.required):
            fits.append(spec.name)
    with_replies = [f for f in fits if SPECS[f].kind != "prompts"]
    return with_replies or fits


def _fits(spec: Format, name: str, dtype: pl.DataType | None) -> bool:
    if dtype is None or name not in spec.turn_fields:
        return dtype is not None
    if spec.turns_are_text:
        return dtype == pl.List(pl.String)
    turn_objects = isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Struct)
    return turn_objects or (name in spec.text_turn_roles and dtype == pl.String)


def _looks_like_data(names: list[str]) -> bool:
    """Field names that read like sentences: a CSV/TSV whose first row is a record (FLAN CoT has no header)."""
    return any(len(n) > 40 or n.count(" ") >= 4 for n in names)


def _clip(text: str, size: int = 40) -> str:
    return text if len(text) <= size else text[: size - 1] + "…"


def turn_text(key: str) -> pl.Expr:
    """A key of the turn at hand (inside `list.eval`) as text. A key that no turn of the chunk gives a value
    (null, or missing where records were read one by one) is typed null, not text, and string work on it
    stopped the build with a polars type error; cast, such turns are malformed rows."""
    return pl.element().struct.field(key).cast(pl.String)


def message(role: str | pl.Expr, content: pl.Expr) -> pl.Expr:
    role_expr = pl.lit(role) if isinstance(role, str) else role
    return pl.struct(role=role_expr, content=content)


def leads_with_system(messages: pl.Expr) -> pl.Expr:
    """Whether a conversation's first turn is a system turn."""
    return messages.list.first().struct.field("role") == "system"


def system_first(frame: pl.DataFrame, column: str, system: pl.Expr, where: pl.Expr | None = None) -> pl.DataFrame:
    """`frame` with a system turn of `system` put first in the conversations of `column` that have none (and
    where `where` holds); a row's own system turn is kept. For a recipe's `system:`, and a `system` field beside
    the turns. Built in long form (a row per turn, grouped back): `pl.concat_list` of structs took 3.7 s per
    million rows, which made a recipe's `system:` on every source cost 60% more build time. A null conversation
    stays null, as it did there."""
    wanted = (~leads_with_system(pl.col(column))).fill_null(True) & pl.col(column).is_not_null()
    wanted = wanted if where is None else wanted & where.fill_null(False)
    chosen = frame.select(pl.int_range(pl.len(), dtype=pl.UInt32).alias("__at"), column, system.alias("__system"))
    chosen = chosen.filter(frame.select(wanted).to_series())
    if chosen.height == 0:
        return frame
    heads = chosen.select("__at", message("system", pl.col("__system")).alias(column))
    turns = chosen.filter(pl.col(column).list.len() > 0).select("__at", column).explode(column)  # [] has no turn
    led = pl.concat([heads, turns]).sort("__at", maintain_order=True).group_by("__at", maintain_order=True).agg(column)
    at = frame.select(pl.int_range(pl.len(), dtype=pl.UInt32).alias("__at"))
    led = at.join(led, on="__at", how="left", maintain_order="left").get_column(column).alias("__led")
    return frame.with_columns(pl.coalesce(led, column).alias(column))


def turn_messages(raw: pl.DataFrame, turns: list[tuple[str, pl.Expr]], system: pl.Expr | None = None) -> pl.Expr:
    """Fixed turns (+ a leading system turn where `system` is not blank) as a list of {role, content}.

    Built in long form (one row per turn) and grouped back, because `pl.concat_list` of structs is about
    twenty times slower on a quarter-million rows; a row's order is kept by sorting on (row, turn).
    """
    parts = [
        raw.select(
            "__row", pl.lit(i, dtype=pl.Int8).alias("__turn"), pl.lit(role).alias("role"), content.alias("content")
        )
        for i, (role, content) in enumerate(turns, start=1)
    ]
    if system is not None:
        parts.append(
            raw.select(
                "__row",
                pl.lit(0, dtype=pl.Int8).alias("__turn"),
                pl.lit("system").alias("role"),
                system.alias("content"),
            ).filter(~blank(pl.col("content")))
        )
    grouped = (
        pl.concat(parts)
        .sort("__row", "__turn")
        .group_by("__row", maintain_order=True)
        .agg(pl.struct("role", "content").alias("messages"))
    )
    assert grouped["__row"].equals(raw["__row"]), "every row has the fixed turns, in __row order"
    return pl.lit(grouped["messages"].cast(MESSAGES))


def content_text(messages: pl.Expr) -> pl.Expr:
    """A conversation's message contents joined by newlines."""
    return messages.list.eval(pl.element().struct.field("content")).list.join("\n")


def content_chars(messages: pl.Expr) -> pl.Expr:
    """Characters in all of a conversation's message contents."""
    return messages.list.eval(pl.element().struct.field("content").str.len_chars()).list.sum()


def first_content(messages: pl.Expr, role: str) -> pl.Expr:
    """The content of a conversation's first turn from `role` (null when there is none)."""
    return messages.list.eval(
        pl.element().filter(pl.element().struct.field("role") == role).struct.field("content")
    ).list.first()


def blank(expr: pl.Expr) -> pl.Expr:
    """True for null or whitespace-only text (what is left has no bytes: counting characters cost a pass)."""
    return expr.is_null() | (expr.str.strip_chars().str.len_bytes() == 0)


def instruction_turn(instruction: pl.Expr, extra: pl.Expr) -> pl.Expr:
    """The user turn of Alpaca-like records: the instruction, then its input (Dolly: context) after a blank
    line when there is one, so one prompt reads the same whichever of these formats it came in."""
    return pl.when(blank(extra)).then(instruction).otherwise(pl.concat_str([instruction, pl.lit("\n\n"), extra]))


def first_reason(*checks: tuple[pl.Expr, str]) -> pl.Expr:
    """The message of the first failing check, or null when a record is fine."""
    expr = pl.lit(None, dtype=pl.String)
    for condition, reason in reversed(checks):
        expr = pl.when(condition).then(pl.lit(reason)).otherwise(expr)
    return expr


def conversation_reason(messages: pl.Expr) -> pl.Expr:
    """Why a canonical conversation is unusable for SFT, or null.

    Rules: at least one user and one assistant turn; roles known; an optional leading system turn, then
    strictly alternating user/assistant starting with user and ending with assistant; no empty turn. A first
    turn from the assistant has a reason of its own: scraped chats often open with the reply's end, and
    ShareGPT's `trim_leading_assistant` reads them as FastChat does.
    """
    roles = messages.list.eval(pl.element().struct.field("role"))
    contents = messages.list.eval(pl.element().struct.field("content"))
    body = pl.when(roles.list.first() == "system").then(roles.list.slice(1)).otherwise(roles)
    # the roles spelt out one after another: a pattern over one short string per row is ~4x faster than
    # comparing each turn with the role its position expects (polars evaluates that list by list). Only rows
    # whose roles are all known and at least two get this far, so the names cannot run into each other.
    alternating = body.list.join("").str.contains("^(?:userassistant)*(?:user)?$")
    return first_reason(
        (messages.is_null() | (messages.list.len() == 0), "empty conversation"),
        (roles.list.eval(~pl.element().is_in(ROLES) | pl.element().is_null()).list.any(), UNKNOWN_ROLE),
        (body.list.len() < 2, "needs a user turn and an assistant turn"),
        (body.list.first() == "assistant", FIRST_IS_ASSISTANT),
        (~alternating, "turns do not alternate user/assistant"),
        (body.list.last() != "assistant", "last turn is not from the assistant"),
        (
            contents.list.eval(pl.element().is_null() | (pl.element().str.strip_chars() == "")).list.any(),
            "empty message",
        ),
    )


def sft_frame(
    raw: pl.DataFrame,
    messages: pl.Expr,
    reason: pl.Expr | None = None,
    native_id: pl.Expr | None = None,
    lang: pl.Expr | None = None,
) -> pl.DataFrame:
    """Assemble the adapter output columns. The conversation is computed once into a column first: eager
    selects do not share subexpressions, and the checks of `conversation_reason` (the default `reason`) would
    otherwise rebuild it for every rule."""
    frame = raw.with_columns(messages.cast(MESSAGES).alias("__messages"))
    frame = frame.select(
        "__row",
        (native_id if native_id is not None else pl.lit(None, dtype=pl.String)).alias("native_id"),
        pl.col("__messages").alias("messages"),
        (lang if lang is not None else pl.lit(None, dtype=pl.String)).alias("lang"),
        (conversation_reason(pl.col("__messages")) if reason is None else reason).alias("__reason"),
    )
    return _name_unknown_roles(frame)


def _name_unknown_roles(frame: pl.DataFrame) -> pl.DataFrame:
    """The reason "unknown role" said nothing of which: tool-use data (LLaMA-Factory's function_call and
    observation, OpenAI's tool) is refused here, and its users need the name. Found only on the rows that have
    one, so a file without any costs one comparison."""
    unknown = pl.col("__reason") == UNKNOWN_ROLE
    if not frame.select(unknown.any()).item():
        return frame
    roles = pl.col("messages").list.eval(pl.element().struct.field("role"))
    first = roles.list.eval(pl.element().filter(~pl.element().is_in(ROLES)).drop_nulls()).list.first()
    named = (
        pl.when(first.is_null()).then(pl.lit("a turn without a role")).otherwise(pl.format("unknown role '{}'", first))
    )
    return frame.with_columns(pl.when(unknown).then(named).otherwise(pl.col("__reason")).alias("__reason"))
