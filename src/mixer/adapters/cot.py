"""FLAN chain-of-thought TSVs: no header; question, answer, rationale; newlines escaped as a literal \\n.

The assistant turn gives the rationale and then the answer, the order FLAN's CoT templates train on.
"""

from __future__ import annotations

import polars as pl

from mixer.adapters.base import Context, adapter, blank, column, first_reason, sft_frame, turn_messages


def _unescape(expr: pl.Expr) -> pl.Expr:
    return expr.str.replace_all(r"\n", "\n", literal=True).str.strip_chars()


def convert(raw: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    question = _unescape(column(raw, ctx, "question"))
    answer = _unescape(column(raw, ctx, "answer"))
    rationale = _unescape(column(raw, ctx, "rationale"))
    reply = pl.concat_str([rationale, pl.lit("\nSo the answer is "), answer.str.strip_chars_end("."), pl.lit(".")])
    messages = turn_messages(raw, [("user", question), ("assistant", reply)])
    reason = first_reason(
        (blank(question), "empty question (column 1)"),
        (blank(answer), "empty answer (column 2)"),
        (blank(rationale), "empty rationale (column 3)"),
    )
    return sft_frame(raw, messages, reason)


ADAPTER = adapter("cot", convert)
