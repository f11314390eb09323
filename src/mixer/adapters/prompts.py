"""Prompts without replies (WizardLM's test instructions, a team's own prompt list): seeds for an evolve
block, which rewrites the instruction and has the teacher answer it. The user turn is built as Alpaca's is
(instruction, then the input after a blank line), so the same seeds read as `alpaca` or `prompts` evolve alike.
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
    system = column(raw, ctx, "system") if ctx.fields["system"] in raw.columns else None
    user = instruction_turn(instruction, extra)
    messages = turn_messages(raw, [("user", user)], system)
    reason = first_reason((blank(instruction), f"empty {ctx.fields['instruction']!r}"))
    return sft_frame(raw, messages, reason, column(raw, ctx, "id", required=False))


ADAPTER = adapter("prompts", convert)
