"""ShareGPT format: conversations of {from, value}; from is human/user, gpt/chatgpt/bard/assistant or system.

Scraped ShareGPT conversations are often broken (a gpt turn first, two human turns in a row, an empty
reply). They are not repaired by guesswork: they are reported as malformed with the reason, and the
registry entry skips them by default (counted in the manifest). A trailing unanswered human turn is trimmed;
a leading gpt turn is trimmed with `trim_leading_assistant: true`, as FastChat's training does.
"""

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

ROLE_NAMES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "system": "system",
}


def convert(raw: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    name = ctx.fields["conversations"]
    if name not in raw.columns:
        raise missing_field(raw, ctx, "conversations")
    role_key, content_key = ctx.options["role_key"], ctx.options["content_key"]
    dtype = raw.schema[name]
    if not (isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Struct)):
        raise wrong_type(raw, ctx, "conversations", f"a list of {{{role_key}, {content_key}}}")
    keys = {f.name for f in dtype.inner.fields}
    if not {role_key, content_key} <= keys:
        raise turn_keys_error(
            ctx,
            keys,
            role_key,
            content_key,
            "these are {role, content} turns: set options: {role_key: role, content_key: content}"
            if {"role", "content"} <= keys
            else "set options: {role_key: ..., content_key: ...}",
        )
    turns = pl.col(name).list.eval(
        message(
            # a name it does not know stays as it is, so the malformed row can name it (`sft_frame`)
            turn_text(role_key).str.to_lowercase().replace(ROLE_NAMES),
            turn_text(content_key),
        )
    )
    raw = raw.with_columns(turns.alias("__turns"))  # computed once: the steps below refer to it several times
    turns = pl.col("__turns")
    if ctx.options["trim_leading_assistant"]:  # as FastChat trains: a scraped page often opens with the reply
        raw = raw.with_columns(_without_leading_reply(turns).alias("__turns"))
    if ctx.options["trim_trailing_user"]:
        last_is_user = turns.list.eval(pl.element().struct.field("role")).list.last() == "user"
        raw = raw.with_columns(
            pl.when(last_is_user).then(turns.list.slice(0, turns.list.len() - 1)).otherwise(turns).alias("__turns")
        )
    if ctx.fields["system"] in raw.columns:
        system = column(raw, ctx, "system")
        raw = system_first(raw, "__turns", system, where=~blank(system))
    return sft_frame(raw, turns, native_id=column(raw, ctx, "id", required=False))


def _without_leading_reply(turns: pl.Expr) -> pl.Expr:
    """The turns without a first turn from the assistant (after the system turn, if one leads)."""
    roles = turns.list.eval(pl.element().struct.field("role"))
    at = (
        pl.when(roles.list.get(0, null_on_oob=True) == "assistant")
        .then(0)
        .when((roles.list.get(0, null_on_oob=True) == "system") & (roles.list.get(1, null_on_oob=True) == "assistant"))
        .then(1)
    )
    return pl.when(at.is_null()).then(turns).otherwise(pl.concat_list(turns.list.head(at), turns.list.slice(at + 1)))


ADAPTER = adapter("sharegpt", convert)
