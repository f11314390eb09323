"""Reasoning models served without a reasoning parser (vLLM without `--reasoning-parser`, llama.cpp without
`--reasoning-format`) put their thinking into the message text, in a `<think>…</think>` block before the
answer; with a chat template that opens the block itself (DeepSeek-R1's), only the closing tag shows. Thinking
read as a rewritten instruction, a judge's verdict or an answer to train on is none of those.
"""

from __future__ import annotations

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def without_reasoning(text: str) -> tuple[str, bool]:
    """(the text after a leading think block, whether there was one). A block never closed (the call stopped
    while thinking) leaves no answer."""
    stripped = text.lstrip()
    if stripped.startswith(THINK_OPEN):
        _, closed, after = stripped.partition(THINK_CLOSE)
        return (after.lstrip() if closed else ""), True
    before, closed, after = text.partition(THINK_CLOSE)
    if closed and THINK_OPEN not in before:  # the template opened the block
        return after.lstrip(), True
    return text, False
