"""Dolly format: instruction / context / response / category (databricks-dolly-15k)."""

from __future__ import annotations

import polars as pl

from mixer.adapters.base import (
    Context,
    adapter,
    blank,
    column,
    first_reason,
    instruction_turn,
    sft_frame,
    turn_messages,
)


def convert(raw: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    instruction = column(raw, ctx, "instruction")
    context = column(raw, ctx, "context", required=False)
    response = column(raw, ctx, "response")
    user = instruction_turn(instruction, context)
    messages = turn_messages(raw, [("user", user), ("assistant", response)])
    reason = first_reason(
        (blank(instruction), f"empty {ctx.fields['instruction']!r}"),
        (blank(response), f"empty {ctx.fields['response']!r}"),
    )
    return sft_frame(raw, messages, reason, column(raw, ctx, "id", required=False))


ADAPTER = adapter("dolly", convert)
