"""Canonical format: messages: [{role: system|user|assistant, content}] (Tülu v2 SFT mixture rows), with an
optional `system` field beside them, put first as a system turn where a row has none of its own."""

from __future__ import annotations

import polars as pl

from mixer.adapters.base import (
    Context,
    adapter,
    blank,
    column,
    message,
    missing_field,
    sft_frame,
    system_first,
    turn_keys_error,
    turn_text,
    wrong_type,
)

# OpenAI's chat format since its o1 models names the system turn `developer`; chat templates know `system`
ROLE_NAMES = {"developer": "system"}


def convert(raw: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    name = ctx.fields["messages"]
    dtype = raw.schema.get(name)
    if dtype is None:
        raise missing_field(raw, ctx, "messages")
    if not (isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Struct)):
        raise wrong_type(raw, ctx, "messages", "a list of {role, content}")
    keys = {f.name for f in dtype.inner.fields}
    if not {"role", "content"} <= keys:
        sharegpt = "format: sharegpt" + ("" if name == "conversations" else f" with fields: {{conversations: {name}}}")
        raise turn_keys_error(
            ctx,
            keys,
            "role",
            "content",
            f"these are ShareGPT's turns: read them as {sharegpt}"
            if {"from", "value"} <= keys
            else f"for turns with other keys, use {sharegpt} and options: {{role_key: ..., content_key: ...}}",
        )
    role = turn_text("role").replace(ROLE_NAMES)
    messages = pl.col(name).list.eval(message(role, turn_text("content")))
    if ctx.fields["system"] in raw.columns:  # a system prompt kept beside the turns, as ShareGPT exports keep it
        system = column(raw, ctx, "system")
        raw = system_first(raw.with_columns(messages.alias("__turns")), "__turns", system, where=~blank(system))
        messages = pl.col("__turns")
    return sft_frame(raw, messages, native_id=column(raw, ctx, "id", required=False))


ADAPTER = adapter("messages", convert)
