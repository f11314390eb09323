"""Alpaca format (Alpaca, Code-Alpaca, GPT4-Alpaca; Open-Orca through a field mapping).

The user turn is the instruction, followed by the input after a blank line when there is one; an
optional system field becomes a leading system turn.
"""

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
    extra = column(raw, ctx, "input", required=False)
    output = column(raw, ctx, "output")
    system = column(raw, ctx, "system") if ctx.fields["system"] in raw.columns else None
    user = instruction_turn(instruction, extra)
    messages = turn_messages(raw, [("user", user), ("assistant", output)], system)
    reason = first_reason(
        (blank(instruction), f"empty {ctx.fields['instruction']!r}"),
        (blank(output), f"empty {ctx.fields['output']!r}"),
    )
    native_id = column(raw, ctx, "id", required=False)
    return sft_frame(raw, messages, reason, native_id)


ADAPTER = adapter("alpaca", convert)
