"""Preference pairs (UltraFeedback-binarized style): prompt / chosen / rejected.

Each of the three may be plain text, a list of {role, content}, or an HH-RLHF transcript ("\n\nHuman: ...").
A chosen/rejected conversation that repeats the prompt is cut to the assistant turns after its last user
turn, so the pair differs only in the reply.
"""

from __future__ import annotations

import polars as pl

from mixer.adapters.base import (
    MESSAGES,
    Context,
    adapter,
    blank,
    first_reason,
    message,
    missing_field,
    turn_text,
    type_words,
)
from mixer.errors import MixerError


def _as_messages(raw: pl.DataFrame, ctx: Context, name: str, role: str) -> pl.Expr:
    native = ctx.fields[name]
    if native not in raw.columns:
        raise missing_field(raw, ctx, name)
    dtype = raw.schema[native]
    if dtype == pl.Null:  # no record of the chunk gives one: as null in each record
        return pl.lit(None, dtype=MESSAGES)
    if dtype == pl.String:
        text = pl.col(native)
        plain = pl.concat_list([message(role, text)])
        return pl.when(text.str.starts_with(TRANSCRIPT_START)).then(_transcript_turns(text)).otherwise(plain)
    if isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Struct):
        keys = sorted(f.name for f in dtype.inner.fields)
        if not {"role", "content"} <= set(keys):
            raise MixerError(f"{ctx.where}: the turns of {native!r} have keys {keys}, expected 'role' and 'content'")
        return pl.col(native).list.eval(message(turn_text("role"), turn_text("content")))
    raise MixerError(
        f"{ctx.where}: field {native!r} is {type_words(dtype)}, expected text or a list of {{role, content}}"
    )


TRANSCRIPT_START = "\n\nHuman:"
# Anthropic's HH-RLHF writes each side of a pair as one transcript: "\n\nHuman: ...\n\nAssistant: ..." (and a
# prompt field, where a derived set has one, ends in "\n\nAssistant:"); cut at the speaker marks
SPEAKERS = {r"\n\nHuman: ?": "user", r"\n\nAssistant: ?": "assistant"}


def _transcript_turns(text: pl.Expr) -> pl.Expr:
    """An HH-RLHF transcript as turns: each speaker mark becomes a separator and the role it names; a turn with
    no text (a prompt's closing "Assistant:") is left out."""
    for mark, speaker in SPEAKERS.items():
        text = text.str.replace_all(mark, f"\x1f{speaker}\x1e")
    parts = text.str.split("\x1f").list.slice(1).list.eval(pl.element().str.split_exact("\x1e", 1))
    turns = parts.list.eval(message(pl.element().struct.field("field_0"), pl.element().struct.field("field_1")))
    return turns.list.eval(pl.element().filter(pl.element().struct.field("content").str.strip_chars() != ""))


def _turns_through_last_user(conversation: pl.Expr) -> pl.Expr:
    """How many leading turns make up the prompt: everything up to and including the last user turn."""
    roles = conversation.list.eval(pl.element().struct.field("role"))
    last_user = roles.list.eval(pl.int_range(pl.len()).filter(pl.element() == "user").max()).list.first()
    return last_user.fill_null(-1) + 1


def _reply_only(conversation: pl.Expr) -> pl.Expr:
    """Assistant turns after the last user turn (the whole list when it has no user turn)."""
    return conversation.list.slice(_turns_through_last_user(conversation))


def _prompt_part(conversation: pl.Expr) -> pl.Expr:
    return conversation.list.head(_turns_through_last_user(conversation))


def convert(raw: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    chosen_full = _as_messages(raw, ctx, "chosen", "assistant")
    rejected_full = _as_messages(raw, ctx, "rejected", "assistant")
    prompt = _prompt_part(chosen_full)  # without a prompt field, it lives inside the chosen conversation
    if (native_prompt := ctx.fields["prompt"]) in raw.columns:
        # a record without one of its own (null where others of the file have one) takes its chosen
        # conversation's too, as it would in a file (or chunk) where no record has one: it was kept as null
        prompt = (
            pl.when(pl.col(native_prompt).is_null()).then(prompt).otherwise(_as_messages(raw, ctx, "prompt", "user"))
        )
    chosen, rejected = _reply_only(chosen_full), _reply_only(rejected_full)
    text = lambda msgs: msgs.list.eval(pl.element().struct.field("content")).list.join("")  # noqa: E731
    reason = first_reason(
        (blank(text(prompt)), "empty prompt"),
        (blank(text(chosen)), "empty chosen reply"),
        (blank(text(rejected)), "empty rejected reply"),
    )
    native = ctx.fields["id"]
    native_id = pl.col(native).cast(pl.String) if native in raw.columns else pl.lit(None, dtype=pl.String)
    return raw.select(
        "__row",
        native_id.alias("native_id"),
        prompt.cast(MESSAGES).alias("prompt"),
        chosen.cast(MESSAGES).alias("chosen"),
        rejected.cast(MESSAGES).alias("rejected"),
        pl.lit(None, dtype=pl.String).alias("lang"),
        reason.alias("__reason"),
    )


ADAPTER = adapter("preference", convert)
