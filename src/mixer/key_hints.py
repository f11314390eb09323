"""Keys that axolotl, open-instruct, LLaMA-Factory, HF TrainingArguments and WizardLM's scripts use for what a
recipe says another way. People arrive with those configs in their heads; a `did you mean` on spelling alone
sends `rows:` to `rounds` and `lr:` nowhere, so each such key is told its name here."""

from __future__ import annotations

import difflib
import re
import unicodedata

from mixer.adapters.formats import supported_suffix


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str | None:
    """The one close spelling, or None: a hint that guesses wrong is worse than the list of choices."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else None


# a source's keys (axolotl's `type`, LLaMA-Factory's `max_samples`)
SOURCE_KEY_HINTS = {
    "filters": "filters are keys of the source itself: `lang: [en]`, `max_chars: 20000`, `min_turns`, `max_turns`, "
    "`drop_patterns`",
    "type": "the record format is `format:` (alpaca, sharegpt, messages, ...)",
    "data_files": "local files are `path:` (a file, a glob or a list)",
    "max_samples": "a number of rows is `take: N`",
    "num_samples": "a number of rows is `take: N`",
    "ratio": "a share of the source's rows is `fraction: f`; a share of mixture.total is `weight: w`",
}
SOURCE_KEY_HINTS["filter"] = SOURCE_KEY_HINTS["filters"]
# LLaMA-Factory's dataset_info.json entries and axolotl's dataset keys
_FIELDS = (
    "a file's own field names are `fields: {canonical: field in the file}` (instruction, input, output, system, "
    "history; LLaMA-Factory's prompt, query and response are instruction, input and output)"
)
SOURCE_KEY_HINTS |= dict.fromkeys(
    ["columns", "field_instruction", "field_input", "field_output", "field_system", "field_messages"], _FIELDS
)
SOURCE_KEY_HINTS |= dict.fromkeys(["file_name", "ds_type"], "local files are `path:` (a file, a glob or a list)")
SOURCE_KEY_HINTS["formatting"] = "the record format is `format:` (alpaca, sharegpt, messages, ...)"
SOURCE_KEY_HINTS |= dict.fromkeys(["hf_hub_url", "ms_hub_url"], "a Hugging Face Hub dataset is `hub: org/name`")
SOURCE_KEY_HINTS |= dict.fromkeys(
    ["split", "subset", "name"], "a hub dataset's split and config: `hub: {id: org/name, split: train, config: c}`"
)
SOURCE_KEY_HINTS["tags"] = (
    "a turn's keys are options: `options: {role_key: from, content_key: value}` (role names human/user, "
    "gpt/assistant and system are read as they are)"
)


# an evolve block's keys (WizardLM's scripts)
_SEED_COUNT = "the number of seed rows is `sample: N` (or `sample: all`)"
EVOLVE_KEY_HINTS = dict.fromkeys(
    ["rows", "num_rows", "n", "seeds", "num_seeds", "num_samples", "max_samples"], _SEED_COUNT
)
EVOLVE_KEY_HINTS |= dict.fromkeys(["source", "seed_source", "input", "dataset"], "the seed source is `from: <source>`")
EVOLVE_KEY_HINTS |= dict.fromkeys(
    ["iterations", "epochs", "generations", "depth"], "the number of rounds is `rounds: M`"
)
EVOLVE_KEY_HINTS["model"] = "the model is the teacher's: `teacher: {model: ..., base_url: ...}`"


# a recipe's top-level keys as axolotl, open-instruct and LLaMA-Factory configs write them
_SOURCES = (
    "a recipe's datasets are `sources:`, a mapping of names to {source: <registry entry>} or {path: ..., format: ...}, "
    "each with take, fraction or weight"
)
_STAGE = "training settings belong to a stage: `stages: [{name: sft, kind: sft, model: ..., data: mixture, ...}]`"
RECIPE_KEY_HINTS = dict.fromkeys(["datasets", "dataset", "dataset_mixer", "dataset_mixer_list", "data"], _SOURCES)
RECIPE_KEY_HINTS |= dict.fromkeys(
    ["base_model", "model", "model_name_or_path", "learning_rate", "num_epochs", "num_train_epochs", "sequence_len"],
    _STAGE,
)
RECIPE_KEY_HINTS["output_dir"] = "the mixture's folder is `output: {dir: ...}`"

# a stage's keys and its hyperparameters as axolotl, LLaMA-Factory and HF TrainingArguments name them
_HYPER = "training settings go in the stage's `hyperparameters: {{{}}}`"
_LAUNCHER = "how the stage runs is its `launcher: {{{}}}`"
_SEQUENCE = "the sequence length is the stage's `max_seq_length`"
STAGE_KEY_HINTS = dict.fromkeys(["sequence_len", "max_length", "cutoff_len", "max_seq_len"], _SEQUENCE)
STAGE_KEY_HINTS |= dict.fromkeys(["base_model", "model_name_or_path"], "the model is `model:`")
STAGE_KEY_HINTS |= dict.fromkeys(["dataset", "datasets"], "the stage trains on `data: mixture` or `data: {source}`")
STAGE_KEY_HINTS |= {k: _HYPER.format("learning_rate: ...") for k in ("learning_rate", "lr")}
STAGE_KEY_HINTS |= {k: _HYPER.format("epochs: N") for k in ("epochs", "num_epochs", "num_train_epochs")}
STAGE_KEY_HINTS |= {k: _HYPER.format("per_device_batch_size: N") for k in ("micro_batch_size", "batch_size")}
STAGE_KEY_HINTS |= {k: _LAUNCHER.format("mixed_precision: bf16") for k in ("bf16", "fp16", "mixed_precision")}
STAGE_KEY_HINTS |= {k: _LAUNCHER.format("backend: deepspeed, zero_stage: 3") for k in ("deepspeed", "fsdp")}
_HYPER_NAMES = {"lr": "learning_rate", "lr_scheduler_type": "lr_scheduler", "warmup_steps": "warmup_ratio"}
_HYPER_NAMES |= dict.fromkeys(["num_epochs", "num_train_epochs"], "epochs")
_HYPER_NAMES |= dict.fromkeys(
    ["micro_batch_size", "per_device_train_batch_size", "batch_size", "train_batch_size"], "per_device_batch_size"
)
_HYPER_NAMES |= dict.fromkeys(["gradient_accumulation", "grad_accum"], "gradient_accumulation_steps")
HYPER_KEY_HINTS = {key: f"here it is `{name}`" for key, name in _HYPER_NAMES.items()}
HYPER_KEY_HINTS["warmup_steps"] += " (a share of the steps)"
HYPER_KEY_HINTS |= dict.fromkeys(["sequence_len", "max_seq_length", "cutoff_len", "max_length"], _SEQUENCE)
HYPER_KEY_HINTS |= dict.fromkeys(["bf16", "fp16"], _LAUNCHER.format("mixed_precision: bf16"))

# which hints fit a mapping, told apart by a key only it allows
KEY_HINTS_BY_MAPPING = (
    ("format", SOURCE_KEY_HINTS),
    ("operators", EVOLVE_KEY_HINTS),
    ("sources", RECIPE_KEY_HINTS),
    ("launcher", STAGE_KEY_HINTS),
    ("warmup_ratio", HYPER_KEY_HINTS),
)


def other_tools_hint(key: str, allowed: list[str]) -> str | None:
    """The hint for `key` in the mapping whose allowed keys are `allowed`, if another tool uses it."""
    hints = next((h for marker, h in KEY_HINTS_BY_MAPPING if marker in allowed), {})
    return hints.get(key)


# axolotl's dataset `type`s that are a format here
AXOLOTL_TYPES = {"alpaca": "alpaca", "sharegpt": "sharegpt", "chat_template": "messages", "alpaca_chat": "alpaca"}


def valid_name(text: str, fill: str = "-") -> str:
    """A recipe, source, block or stage name made from any text ('ü mix' → 'u-mix'): accents dropped, every
    other run of characters a name cannot hold one `fill`, starting with a letter or digit; "" when nothing is
    left. The schema's rule: ASCII letters, digits, '_', '.' and '-', a letter or digit first."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z0-9_.-]+", fill, ascii_text).lstrip("_.-").rstrip(fill)


def _source_entry(dataset: str, fmt: str, amount: str) -> str:
    """`name: {path|hub: dataset, format: fmt, amount}`, named after the dataset's last part."""
    local = supported_suffix(dataset) is not None  # a file mixer reads, else a hub id
    base = dataset.rstrip("/").rsplit("/", 1)[-1]
    base = base.split(".", 1)[0] if local else base
    name = valid_name(base, fill="_") or "data"
    return f"{name}: {{{'path' if local else 'hub'}: {dataset}, format: {fmt}, {amount}}}"


def dataset_mixer_hint(key: str, value: object) -> str | None:
    """Another tool's list of datasets written out as the `sources:` that say it, ready to paste: open-instruct's
    `dataset_mixer` ({dataset: n}) or `dataset_mixer_list` ([dataset, n, ...]), whose datasets are in
    `messages` form and whose n is a fraction up to 1, else rows (its own reading); axolotl's `datasets` ([{path,
    type}], every row of each). None for anything else."""
    entries, tool = [], ""
    if key in ("dataset_mixer", "dataset_mixer_list"):
        if isinstance(value, dict):
            pairs = list(value.items())
        elif isinstance(value, list) and len(value) % 2 == 0:
            pairs = list(zip(value[::2], value[1::2], strict=True))
        else:
            return None
        for dataset, n in pairs:
            if not isinstance(dataset, str) or isinstance(n, bool) or not isinstance(n, int | float):
                return None
            amount = "take: all" if n == 1 else f"fraction: {n}" if n < 1 else f"take: {int(n)}"
            entries.append(_source_entry(dataset, "messages", amount))
        tool = "open-instruct's"
    elif key == "datasets" and isinstance(value, list):
        for item in value:
            if not (isinstance(item, dict) and isinstance(item.get("path"), str)):
                return None
            fmt = AXOLOTL_TYPES.get(item.get("type"))
            if fmt is None:
                return None
            entries.append(_source_entry(item["path"], fmt, "take: all"))
        tool = "axolotl's"
    if not entries:
        return None
    shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
    return f"{tool} {key} is `sources:` here: sources: {{{shown}}}"
