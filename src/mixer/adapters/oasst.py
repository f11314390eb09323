"""OpenAssistant (oasst1/oasst2): message trees → conversations along the top-ranked replies, as Tülu does.

Accepts both shapes the data ships in: the flat message table of the hub (message_id, parent_id, role,
text, rank, lang, deleted) and the nested `*.trees.jsonl` export ({message_tree_id, prompt: {..., replies}}).
Every root-to-leaf path through non-deleted messages becomes one conversation; with `top_k_reply: k` only
the k best-ranked replies are followed at each level (rank 0 is best, unranked replies come last, in file
order). A path ending in an unanswered prompter turn is trimmed to its last assistant turn. Trees are walked
in Python: they are small and their depth varies, which vectorised code handles worse, not better.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import polars as pl

from mixer.adapters.base import MESSAGES, Context, adapter, conversation_reason
from mixer.errors import MixerError

ROLE = {"prompter": "user", "assistant": "assistant"}
TEXT_BOOLEANS = {"true": True, "false": False, "1": True, "0": False, "": False}
# what the walk reads of a message: the flat table's other columns (labels, emojis, detoxify scores) are
# nested, and turning them into Python objects took most of the conversion (1.9 s against 0.4 s for 90K)
WALKED = ("__row", "message_id", "parent_id", "role", "text", "rank", "deleted", "lang")


def _rank(node: dict[str, Any]) -> float:
    rank = node.get("rank")
    return math.inf if rank is None else float(rank)


def _shape_problem(root: Any) -> str | None:
    """Why a tree is not shaped like OpenAssistant's (a record of the trees export is free-form JSON), or None.
    Checked before the walk, so a bad tree is a malformed row instead of a crash halfway through it."""
    if not isinstance(root, dict):
        return "no `prompt` object (the tree of a *.trees.jsonl record)"
    pending, visited = [root], set()
    while pending:
        message = pending.pop()
        if id(message) in visited:  # a flat table that repeats a message id links a reply back to its tree
            continue
        visited.add(id(message))
        if not isinstance(message.get("message_id"), str):
            return "a message without a text `message_id`"
        if not all(isinstance(message.get(key), str | None) for key in ("role", "text", "lang")):
            return "a message whose `role`, `text` or `lang` is not text"
        if not isinstance(message.get("rank"), int | float | None):
            return "a message whose `rank` is not a number"
        if message.get("deleted") not in (None, True, False):  # 0 and 1 are equal to these; 0.5 or "no" is not
            return "a message whose `deleted` is not true or false"
        replies = message.get("replies")
        if replies is None:
            continue
        if not isinstance(replies, list) or not all(isinstance(reply, dict) for reply in replies):
            return "a message whose `replies` is not a list of messages"
        pending.extend(replies)
    return None


def _paths(root: dict[str, Any], top_k: int | None) -> list[list[dict[str, Any]]]:
    """Every root-to-leaf path through messages not deleted, depth first in reply order. Walked with a stack, not
    recursion, so a tree deeper than Python's recursion limit is walked like any other. A reply that is already
    on its path (a message id repeated in a flat table) ends the path instead of looping."""
    if root.get("deleted"):
        return []
    paths, pending = [], [[root]]
    while pending:
        path = pending.pop()
        on_path = {id(message) for message in path}
        replies = [r for r in path[-1].get("replies") or [] if not r.get("deleted") and id(r) not in on_path]
        if top_k is not None:
            replies = sorted(replies, key=_rank)[:top_k]  # sorted() is stable: file order breaks ties
        if not replies:
            paths.append(path)
        pending.extend([*path, reply] for reply in reversed(replies))
    return paths


def _read_text_values(record: dict[str, Any]) -> None:
    """A CSV or TSV export of the message table holds every value as text ("0" for a rank, "" for none,
    "False" for not deleted), which read as a rank that is not a number and a message that is deleted (any text
    is true). Text that is neither stays as it is, for the shape check to name."""
    rank = record.get("rank")
    if isinstance(rank, str):
        with contextlib.suppress(ValueError):
            record["rank"] = float(rank) if rank.strip() else None
    deleted = record.get("deleted")
    if isinstance(deleted, str):
        record["deleted"] = TEXT_BOOLEANS.get(deleted.strip().lower(), deleted)


def _trees_from_flat(raw: pl.DataFrame, ctx: Context) -> list[tuple[int, dict[str, Any]]]:
    needed = ("message_id", "parent_id", "role", "text")
    missing = [c for c in needed if c not in raw.columns]
    if missing:
        raise MixerError(f"{ctx.where}: oasst message table lacks {missing}")
    for column in ("message_id", "parent_id"):  # ids are looked up in a dict: a list or struct id cannot be
        if raw.schema[column] not in (pl.String, pl.Null):
            raise MixerError(
                f"{ctx.where}: oasst message table: `{column}` holds {raw.schema[column]}, not text ids",
                "the hub's message table has text ids (UUIDs); check the file is that table",
            )
    records = raw.select(c for c in WALKED if c in raw.columns).to_dicts()
    if any(raw.schema[c] == pl.String for c in ("rank", "deleted") if c in raw.columns):
        for record in records:
            _read_text_values(record)
    children: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        record["replies"] = children.setdefault(record["message_id"], [])
    roots = []
    for record in records:
        parent = record.get("parent_id")
        if parent is None or parent == "":  # a CSV or TSV export writes a root's missing parent as an empty field
            roots.append((record["__row"], record))
        elif parent in children:
            children[parent].append(record)
    return roots


def _trees_from_nested(raw: pl.DataFrame) -> list[tuple[int, dict[str, Any]]]:
    return list(zip(raw["__row"].to_list(), raw["prompt"].to_list(), strict=True))


def _trees_from_records(raw: pl.DataFrame) -> list[tuple[int, Any]]:
    """The trees export read as Python objects (mixer.io: polars is slow on trees this deep)."""
    records = zip(raw["__row"].to_list(), raw["__record"].to_list(), strict=True)
    return [(row, record.get("prompt")) for row, record in records]


def convert(raw: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    if "__record" in raw.columns:
        roots = _trees_from_records(raw)
    elif "prompt" in raw.columns and isinstance(raw.schema["prompt"], pl.Struct):
        roots = _trees_from_nested(raw)
    elif "message_id" in raw.columns:
        roots = _trees_from_flat(raw, ctx)
    else:
        raise MixerError(
            f"{ctx.where}: not an OpenAssistant file",
            "expected the flat message table (message_id, parent_id, ...) or a *.trees.jsonl export",
        )
    top_k = ctx.options["top_k_reply"]
    rows, seen, malformed = [], ctx.seen, []
    for tree_row, root in roots:
        if (problem := _shape_problem(root)) is not None:
            malformed.append((tree_row, problem))
            continue
        for path in _paths(root, top_k):
            while path and path[-1].get("role") != "assistant":
                path = path[:-1]
            if not path or path[-1]["message_id"] in seen:
                continue
            seen.add(path[-1]["message_id"])
            rows.append(
                {
                    "__row": tree_row,
                    "native_id": path[-1]["message_id"],
                    "messages": [
                        {"role": ROLE.get(m.get("role"), m.get("role")), "content": m.get("text")} for m in path
                    ],
                    "lang": root.get("lang"),
                }
            )
    schema = {"__row": pl.UInt32, "native_id": pl.String, "messages": MESSAGES, "lang": pl.String}
    frame = pl.DataFrame(rows, schema=schema).with_columns(conversation_reason(pl.col("messages")).alias("__reason"))
    if malformed:  # trees of the wrong shape: malformed rows, quoted in rejects
        rows_of, reasons = zip(*malformed, strict=True)
        bad = pl.DataFrame({"__row": rows_of, "__reason": reasons}, schema={"__row": pl.UInt32, "__reason": pl.String})
        bad = bad.with_columns(
            pl.lit(None, dtype=pl.String).alias("native_id"),
            pl.lit(None, dtype=MESSAGES).alias("messages"),
            pl.lit(None, dtype=pl.String).alias("lang"),
        ).select(frame.columns)
        frame = pl.concat([frame, bad]).sort("__row", maintain_order=True)
    return frame


ADAPTER = adapter("oasst", convert)
