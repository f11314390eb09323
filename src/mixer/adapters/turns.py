"""Alternating-turns format (LIMA): conversations is a list of strings, user first."""

from __future__ import annotations

import polars as pl

from mixer.adapters.base import Context, adapter, column, message, missing_field, sft_frame, wrong_type


def convert(raw: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    name = ctx.fields["conversations"]
    if name not in raw.columns:
        raise missing_field(raw, ctx, "conversations")
    if raw.schema[name] != pl.List(pl.String):
        raise wrong_type(raw, ctx, "conversations", "a list of texts")
    role = pl.when(pl.int_range(pl.len()) % 2 == 0).then(pl.lit("user")).otherwise(pl.lit("assistant"))
    messages = pl.col(name).list.eval(message(role, pl.element()))
    return sft_frame(raw, messages, native_id=column(raw, ctx, "id", required=False))


ADAPTER = adapter("turns", convert)
