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
    return sft_frame(raw, messages, first_reason(*checks), column(raw, ctx, "id", required=False))


ADAPTER = adapter("alpaca", convert)
