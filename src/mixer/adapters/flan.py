"""FLAN v2 format: inputs / targets records (jsonl), one user and one assistant turn."""

from __future__ import annotations

import polars as pl

from mixer.adapters.base import Context, adapter, blank, column, first_reason, sft_frame, turn_messages


def convert(raw: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    inputs = column(raw, ctx, "inputs")
    targets = column(raw, ctx, "targets")
    messages = turn_messages(raw, [("user", inputs), ("assistant", targets)])
    reason = first_reason(
        (blank(inputs), f"empty {ctx.fields['inputs']!r}"),
        (blank(targets), f"empty {ctx.fields['targets']!r}"),
    )
    return sft_frame(raw, messages, reason, column(raw, ctx, "id", required=False))


ADAPTER = adapter("flan", convert)
