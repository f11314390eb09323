"""Tokenisation for the trainers: chat template rendering, assistant-only labels, packing, collation.

Labels come from character spans: the text up to each assistant turn (rendered with the generation prompt)
and the text through that turn give exact character boundaries, and tokens whose offsets fall inside are
the only ones that carry labels. This needs no assumption that tokenising a prefix gives a prefix of the
tokens, which BPE merges across boundaries can break.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

IGNORE = -100

# Tülu's format: <|user|>\n...\n<|assistant|>\n...</s>\n
TULU_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '<|system|>\\n' + message['content'] + '\\n' }}"
    "{% elif message['role'] == 'user' %}{{ '<|user|>\\n' + message['content'] + '\\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>\\n' + message['content'] + eos_token + '\\n' }}"
    "{% endif %}"
    "{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
    "{% endfor %}"
)


def ensure_chat_template(tokenizer: Any, template: str | None) -> None:
    """Use the recipe's template, else the tokenizer's own, else Tülu's."""
    if template and template != "tulu":
        tokenizer.chat_template = template
    elif template == "tulu" or not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = TULU_TEMPLATE


class TemplateRefused(SystemExit):
    """A chat template's own refusal of a conversation: a worker exits with its text; `mixer train` checks for it
    before launching (mixer.train.preflight) and says it as an error with a hint."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(f"{problem}; {fix}")
        self.problem, self.fix = problem, fix


def render(tokenizer: Any, messages: list[dict], add_generation_prompt: bool = False) -> str:
    from jinja2.exceptions import TemplateError

    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    except TemplateError as exc:  # the template's own refusal: Gemma's and older Mistral's of a system turn
        roles = ", ".join(str(m.get("role")) for m in messages)
        fix = (
            "this model's template takes no system turn: drop `system:` from the recipe's sources (or the rows that "
            "have one), or give the stage a chat_template that takes it"
            if "system" in str(exc).lower()
            else "give the stage a chat_template that renders these turns"
        )
        raise TemplateRefused(f"the chat template refused a conversation of turns {roles}: {exc}", fix) from None


def assistant_spans(tokenizer: Any, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character span of every assistant turn (with its end token)."""
    text = render(tokenizer, messages)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            start = len(render(tokenizer, messages[:i], add_generation_prompt=True)) if i else 0
            end = len(render(tokenizer, messages[: i + 1]))
            spans.append((start, end))
    return text, spans


def labelled_tokens(tokenizer: Any, text: str, spans: list[tuple[int, int]], max_len: int) -> tuple[list, list]:
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = encoded["input_ids"][:max_len]
    labels = [IGNORE] * len(ids)
    for k, (start, end) in enumerate(encoded["offset_mapping"][:max_len]):
        if end > start and any(s <= start and end <= e for s, e in spans):
            labels[k] = ids[k]
    return ids, labels


def sft_example(tokenizer: Any, messages: list[dict], max_len: int) -> tuple[list[int], list[int]] | None:
    """input_ids and labels (assistant tokens only); None when truncation leaves nothing to learn."""
    text, spans = assistant_spans(tokenizer, messages)
    ids, labels = labelled_tokens(tokenizer, text, spans, max_len)
    return (ids, labels) if any(x != IGNORE for x in labels) else None


def preference_example(tokenizer: Any, prompt: list[dict], chosen: list[dict], rejected: list[dict], max_len: int):
    """Two sequences sharing the prompt; labels only on the reply, so log-probs compare replies alone."""
    out = {}
    for name, reply in (("chosen", chosen), ("rejected", rejected)):
        text, spans = assistant_spans(tokenizer, prompt + reply)
        reply_start = len(render(tokenizer, prompt, add_generation_prompt=True))
        ids, labels = labelled_tokens(tokenizer, text, [(s, e) for s, e in spans if s >= reply_start], max_len)
        if not any(x != IGNORE for x in labels):
            return None
        out[name] = (ids, labels)
    return out


@dataclass
class Packed:
    """One training row: several whole examples back to back, each with its own segment id."""

    input_ids: list[int]
    labels: list[int]
    segments: list[int]


def pack(examples: list[tuple[list[int], list[int]]], max_len: int) -> list[Packed]:
    """Greedy, order-preserving packing of whole examples into rows of at most max_len tokens."""
    rows: list[Packed] = []
    current = Packed([], [], [])
    for ids, labels in examples:
        if current.input_ids and len(current.input_ids) + len(ids) > max_len:
            rows.append(current)
            current = Packed([], [], [])
        segment = (current.segments[-1] + 1) if current.segments else 0
        current.input_ids += ids
        current.labels += labels
        current.segments += [segment] * len(ids)
    if current.input_ids:
        rows.append(current)
    return rows


def collate(rows: list[Packed], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch. Attention is block-diagonal causal within each packed example (a 4D boolean mask)
    and positions restart per example, so a packed row computes exactly what its examples would alone."""
    width = max(len(r.input_ids) for r in rows)
    batch = len(rows)
    input_ids = torch.full((batch, width), pad_id, dtype=torch.long)
    labels = torch.full((batch, width), IGNORE, dtype=torch.long)
    segments = torch.full((batch, width), -1, dtype=torch.long)
    positions = torch.zeros((batch, width), dtype=torch.long)
    for b, row in enumerate(rows):
        n = len(row.input_ids)
        input_ids[b, :n] = torch.tensor(row.input_ids)
        labels[b, :n] = torch.tensor(row.labels)
        seg = torch.tensor(row.segments)
        segments[b, :n] = seg
        starts = torch.cat([torch.tensor([True]), seg[1:] != seg[:-1]])
        index = torch.arange(n)
        first = torch.cummax(torch.where(starts, index, torch.zeros_like(index)), 0).values
        positions[b, :n] = index - first
    same = (segments[:, :, None] == segments[:, None, :]) & (segments[:, :, None] >= 0)
    causal = torch.tril(torch.ones(width, width, dtype=torch.bool))
    mask = (same & causal)[:, None, :, :]
    # padded query rows attend to themselves only, so no row is fully masked (NaNs in softmax)
    mask = mask | torch.eye(width, dtype=torch.bool)[None, None]
    return {"input_ids": input_ids, "labels": labels, "attention_mask": mask, "position_ids": positions}


def as_rows(examples: list[tuple[list[int], list[int]]]) -> list[Packed]:
    return [Packed(ids, labels, [0] * len(ids)) for ids, labels in examples]
