"""What each record format accepts: fields, options, kind. Plain data, so validating a recipe (and deciding
that a rebuild is a no-op) needs no dataframe library; how records become rows is in the adapter modules."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# the input files a source may come in, whatever its record format
SUPPORTED_SUFFIXES = (
    ".json",
    ".jsonl",
    ".jsonl.gz",
    ".json.gz",
    ".parquet",
    ".arrow",  # Arrow IPC, as `datasets` writes its cache files and `save_to_disk` folders
    ".csv",
    ".tsv",
    ".tsv.gz",
    ".csv.gz",
)
# the command that gives back a supported file from one compressed another way (a .jsonl.zst shard)
DECOMPRESS = {".zst": "zstd -d", ".zstd": "zstd -d", ".bz2": "bunzip2 -k", ".xz": "unxz -k", ".lz4": "lz4 -d"}


def readable(name: str) -> bool:
    """Whether some reader takes a file of this name."""
    return name.lower().endswith(SUPPORTED_SUFFIXES)


def supported_suffix(name: str) -> str | None:
    """The supported suffix `name` ends with, in any case (returned lower-cased). None ends another (`.json`
    does not end `.json.gz`), so at most one fits."""
    lower = name.lower()
    return next((s for s in SUPPORTED_SUFFIXES if lower.endswith(s)), None)


def unreadable_file(name: str) -> tuple[str, str]:
    """Message and hint for a file name no reader takes (`readable` is false): a supported file compressed some
    other way than gzip is told the command that decompresses it."""
    lower = name.lower()
    for suffix, command in DECOMPRESS.items():
        if lower.endswith(suffix) and lower.removesuffix(suffix).endswith(SUPPORTED_SUFFIXES):
            return (
                f"{suffix.lstrip('.')}-compressed files are not read",
                f"mixer reads plain or gzip text: `{command} {name}` (or recompress it with gzip)",
            )
    return "unsupported file type", f"use one of {', '.join(SUPPORTED_SUFFIXES)}"


@dataclass(frozen=True)
class Format:
    name: str
    summary: str
    fields: dict[str, str]  # canonical field -> default native column
    required: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)  # option -> default
    kind: str = "sft"  # or "preference" (DPO pairs), or "prompts" (no replies: seeds of evolve blocks only)
    has_lang: bool = False
    headerless: bool = False  # read csv/tsv without a header row (FLAN CoT)
    row_local: bool = True  # each record converts alone, so a big JSONL file can be read in chunks
    # a field holding a whole nested record (oasst's trees export: `prompt`): a JSON-lines file whose first
    # record has it as an object converts record by record (so in chunks), from Python objects (mixer.io)
    nested: str | None = None
    # canonical fields holding lists of turns ({role, content}, or the role_key/content_key options): polars
    # may mistype them when records mix shapes, so they are checked record by record then (mixer.shapes)
    turn_fields: tuple[str, ...] = ()
    text_turn_roles: dict[str, str] = field(default_factory=dict)  # those that may be text instead: its role
    turns_are_text: bool = False  # a turn is its text (LIMA), not an object
    # canonical flat fields that are trained as text: a list in one record of a chunk is a malformed record,
    # which polars would otherwise write into the text as its JSON (mixer.shapes)
    text_fields: tuple[str, ...] = ()


def _top_k(value: Any) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 1)


# what each adapter option may be set to, in words, and the check: options are not in the JSON Schema, which
# cannot know which format a source has
OPTION_VALUES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "top_k_reply": ("a whole number of at least 1, or null for every reply", _top_k),
    "role_key": ("a field name", lambda value: isinstance(value, str) and value != ""),
    "content_key": ("a field name", lambda value: isinstance(value, str) and value != ""),
    "trim_trailing_user": ("true or false", lambda value: isinstance(value, bool)),
    "trim_leading_assistant": ("true or false", lambda value: isinstance(value, bool)),
}

SPECS = {
    spec.name: spec
    for spec in (
        Format(
            name="alpaca",
            summary="instruction / input / output (+ optional system, history, id)",
            fields={
                "instruction": "instruction",
                "input": "input",
                "output": "output",
                "system": "system",
                "history": "history",
                "id": "id",
            },
            required=("instruction", "output"),
            text_fields=("instruction", "input", "output", "system"),
        ),
        Format(
            name="cot",
            summary="FLAN CoT TSV: question, answer, rationale (no header, escaped \\n)",
            fields={"question": "column_1", "answer": "column_2", "rationale": "column_3"},
            required=("question", "answer", "rationale"),
            headerless=True,
        ),
        Format(
            name="dolly",
            summary="instruction / context / response / category",
            fields={"instruction": "instruction", "context": "context", "response": "response", "id": "id"},
            required=("instruction", "response"),
            text_fields=("instruction", "context", "response"),
        ),
        Format(
            name="flan",
            summary="inputs / targets (FLAN v2 jsonl)",
            fields={"inputs": "inputs", "targets": "targets", "id": "id"},
            required=("inputs", "targets"),
            text_fields=("inputs", "targets"),
        ),
        Format(
            name="messages",
            summary="messages: [{role, content}] (already canonical; + optional id, system)",
            fields={"messages": "messages", "id": "id", "system": "system"},
            required=("messages",),
            turn_fields=("messages",),
            text_fields=("system",),
        ),
        Format(
            name="oasst",
            summary="OpenAssistant message table or trees.jsonl → top-k ranked paths",
            fields={},
            required=(),
            options={"top_k_reply": None},
            has_lang=True,
            row_local=False,  # the flat message table is one tree across many records
            nested="prompt",  # the trees export: a tree per record
        ),
        Format(
            name="preference",
            summary="prompt / chosen / rejected (text or message lists) for DPO",
            fields={"prompt": "prompt", "chosen": "chosen", "rejected": "rejected", "id": "prompt_id"},
            required=("chosen", "rejected"),
            kind="preference",
            turn_fields=("prompt", "chosen", "rejected"),
            text_turn_roles={"prompt": "user", "chosen": "assistant", "rejected": "assistant"},
        ),
        Format(
            name="prompts",
            summary="instruction (+ optional input, system, id), no reply: seeds for evolve blocks (take: 0)",
            fields={"instruction": "instruction", "input": "input", "system": "system", "id": "id"},
            required=("instruction",),
            kind="prompts",
            text_fields=("instruction", "input", "system"),
        ),
        Format(
            name="sharegpt",
            summary="conversations: [{from: human|gpt|system, value}] (+ optional id, system)",
            fields={"conversations": "conversations", "id": "id", "system": "system"},
            required=("conversations",),
            options={
                "role_key": "from",
                "content_key": "value",
                "trim_trailing_user": True,
                "trim_leading_assistant": False,
            },
            turn_fields=("conversations",),
            text_fields=("system",),
        ),
        Format(
            name="turns",
            summary="conversations: [user, assistant, user, ...] as plain strings (LIMA)",
            fields={"conversations": "conversations", "id": "id"},
            required=("conversations",),
            turn_fields=("conversations",),
            turns_are_text=True,
        ),
    )
}
