"""Alpaca format (Alpaca, Code-Alpaca, GPT4-Alpaca; Open-Orca through a field mapping).

The user turn is the instruction, followed by the input after a blank line when there is one; an
optional system field becomes a leading system turn, and LLaMA-Factory's optional history the exchanges before.
"""

from __future__ import annotations

import json

import polars as pl

from mixer.adapters.base import (
    MESSAGES,
    Context,
    adapter,
    blank,
    column,
    first_reason,
    instruction_turn,
    leads_with_system,
    message,
    number_text,
    sft_frame,
    turn_messages,
)
from mixer.errors import MixerError
from mixer.shapes import value_text


def convert(raw: pl.DataFrame, ctx: Context, extra: str = "input", reply: str | None = "output") -> pl.DataFrame:
    """Alpaca records, or with `reply=None` their prompts alone (format `prompts`: an evolve block's seeds), or
    under Dolly's names (`extra="context"`, `reply="response"`; Dolly has no system field)."""
    instruction = column(raw, ctx, "instruction")
    addition = column(raw, ctx, extra, required=False)
    system = column(raw, ctx, "system") if ctx.fields.get("system") in raw.columns else None
    turns = [("user", instruction_turn(instruction, addition))]
    checks = [(blank(instruction), f"empty {ctx.fields['instruction']!r}")]
    if reply is not None:
        output = column(raw, ctx, reply)
        turns.append(("assistant", output))
        checks.append((blank(output), f"empty {ctx.fields[reply]!r}"))
    messages = turn_messages(raw, turns, system)
    if (history := _history(raw, ctx)) is not None:  # earlier exchanges go between the system turn and these
        earlier, wrong = history
        leading = leads_with_system(messages).cast(pl.Int64)
        messages = pl.concat_list([messages.list.head(leading), earlier, messages.list.slice(leading)])
        checks.append((wrong, f"a {ctx.fields['history']!r} entry is not [instruction, response]"))
    return sft_frame(raw, messages, first_reason(*checks), column(raw, ctx, "id", required=False))


def _history(raw: pl.DataFrame, ctx: Context) -> tuple[pl.Expr, pl.Expr] | None:
    """LLaMA-Factory's `history`: the exchanges before this one, as [[instruction, response], ...]. Their turns,
    and whether an entry is not two texts; None when no record of the chunk has any. Left unread, a follow-up
    question lost the conversation it follows."""
    native = ctx.fields.get("history")
    dtype = raw.schema.get(native) if native else None
    if dtype is None or dtype == pl.Null or (isinstance(dtype, pl.List) and dtype.inner == pl.Null):
        return None
    unreadable = pl.lit(False)
    if dtype == pl.String:  # records of several shapes in one chunk: polars wrote each value as its JSON
        written = raw.get_column(native)
        decoded = written.map_elements(_pairs, return_dtype=PAIRS, skip_nulls=True)  # once, not per use below
        pairs, unreadable = pl.lit(decoded), pl.lit(written.is_not_null() & decoded.is_null())
    elif isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.List | pl.Null):
        inner = dtype.inner.inner if isinstance(dtype.inner, pl.List) else pl.Null
        said = number_text(pl.element()) if inner.is_float() else pl.element().cast(pl.String)  # 2.0 is "2"
        pairs = pl.col(native).list.eval(pl.element().list.eval(said)).cast(PAIRS)
    else:
        raise MixerError(
            f"{ctx.where}: field {native!r} holds {dtype} values, expected [[instruction, response], ...]",
            "LLaMA-Factory's history is a list of two-text lists; map another field with fields: {history: <field>}",
        )
    said = lambda i: pl.element().list.get(i, null_on_oob=True)  # noqa: E731
    exchange = pl.concat_list([message("user", said(0)), message("assistant", said(1))])
    turns = (
        pairs.list.eval(exchange)
        .list.eval(pl.element().explode(empty_as_null=False))
        .fill_null(pl.lit([], dtype=MESSAGES))
    )
    wrong = pairs.list.eval((pl.element().list.len() != 2) | blank(said(0)) | blank(said(1))).list.any()
    return turns, unreadable | wrong.fill_null(False)


PAIRS = pl.List(pl.List(pl.String))


def _pairs(text: str) -> list[list[str | None]] | None:
    """A history written as JSON text, when it is a list of lists; None for anything else. A number in it is
    its text, as when polars types the chunk itself (`shapes.value_text`), so both reading paths agree."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, list) and all(isinstance(pair, list) for pair in value):
        return [[value_text(said) for said in pair] for pair in value]
    return None


ADAPTER = adapter("alpaca", convert)
