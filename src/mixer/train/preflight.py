"""Checks before any worker starts, so a stage that cannot run stops `mixer train` at once, with its reason:
its conversations, one of each shape of turns, rendered through its chat template (a template that refuses a
turn, Gemma's of a system turn, stopped every worker after loading the model), and a hub model that is neither
in this machine's Hugging Face cache nor reachable (each worker retried every file for ~25 s, and the reason
ended up above a launcher traceback).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl

from mixer.errors import MixerError
from mixer.resolve import why_hub_cannot_be_asked
from mixer.train.config import StageConfig

SHAPES_CHECKED = 64  # distinct sequences of roles rendered; real mixtures have a handful


def conversations_of_each_shape(config: StageConfig) -> Iterator[list[dict[str, Any]]]:
    """The first conversation of each sequence of roles in the stage's data (a DPO pair's prompt and chosen
    reply together), read as columns of roles only until the few rows to render are known."""
    columns = ["messages"] if config.kind == "sft" else ["prompt", "chosen"]
    roles = [pl.col(c).list.eval(pl.element().struct.field("role")).list.join(",") for c in columns]
    firsts = (
        pl.scan_parquet(config.data_files)
        .select(*columns, pl.concat_str(roles, separator="|").alias("__shape"))
        .unique("__shape", keep="first", maintain_order=True)
        .head(SHAPES_CHECKED)
        .collect()
    )
    for row in firsts.iter_rows(named=True):
        yield [turn for column in columns for turn in row[column]]


def check_chat_template(config: StageConfig) -> None:
    try:  # `--slurm` runs this where the training packages may not be installed
        from mixer.train.common import load_tokenizer
        from mixer.train.data import TemplateRefused, render
    except ImportError:
        return
    try:
        tokenizer = load_tokenizer(config)
    except Exception:  # not there yet, or not reachable from here: the workers load it and say why
        return
    for messages in conversations_of_each_shape(config):
        try:
            render(tokenizer, messages)
        except TemplateRefused as refused:
            raise MixerError(f"stage {config.name}: {refused.problem}", refused.fix) from None


HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")  # `name` or `org/name`; a path elsewhere on disk is not one


def check_models(config: StageConfig) -> None:
    """The stage's model and tokenizer, checked where they are. A local folder must hold the model (a typo in
    `runs/.../final` went to every worker, which took it for a hub id and failed in a traceback). A hub id must
    be in the Hugging Face cache or on a hub that answers: a connection and one request, nothing when the cache
    has it. Called as the stage starts, when the stages before it have written their models."""
    checked = (("model", config.model, ("config.json",)), ("tokenizer", config.tokenizer, TOKENIZER_FILES))
    for what, repo, markers in checked:
        if not repo:
            continue
        folder = Path(repo).expanduser()
        local = folder.exists() or not HUB_ID.fullmatch(repo)
        problem = _folder_problem(folder, markers) if local else _hub_problem(repo, markers[0])
        if problem is not None:
            raise MixerError(f"stage {config.name}: {what} {repo!r} {problem[0]}", problem[1])


TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json")
FOLDER_HINTS = {  # by the file that marks the folder
    "config.json": "give the folder holding the model's config.json (a stage's own is in runs/RECIPE/STAGE/final)",
    "tokenizer_config.json": "give the folder holding the tokenizer's files (tokenizer_config.json or tokenizer.json)",
}


def _folder_problem(folder: Path, markers: tuple[str, ...]) -> tuple[str, str] | None:
    """(what is wrong, what to do) for a local model or tokenizer folder that cannot be loaded, None when it can."""
    if not folder.exists():
        parent = folder.parent
        names = [c.name for c in parent.iterdir() if c.is_dir()] if parent.is_dir() else []
        close = difflib.get_close_matches(folder.name, names, n=1)
        return (
            "is no folder here, and not a hub id (org/name)",
            f"did you mean {parent / close[0]}?" if close else FOLDER_HINTS[markers[0]],
        )
    if not folder.is_dir():
        return "is a file", FOLDER_HINTS[markers[0]]
    if any((folder / marker).is_file() for marker in markers):
        return None
    inside = sorted({str(f.parent) for pattern in ("*/", "*/*/", "*/*/*/") for f in folder.glob(pattern + markers[0])})
    return (
        f"has no {markers[0]}",
        f"give the folder holding it: {', '.join(inside[:3])}" if inside else FOLDER_HINTS[markers[0]],
    )


def _hub_problem(repo: str, marker: str) -> tuple[str, str] | None:
    """(what is wrong, what to do) for a hub repository this machine cannot load, None when it can. Offline
    mode and no connection are told by `resolve.why_hub_cannot_be_asked`, as for hub sources (a proxy, a
    mirror in HF_ENDPOINT); the repository itself by one request."""
    try:
        from huggingface_hub import HfApi, try_to_load_from_cache
        from huggingface_hub.errors import RepositoryNotFoundError
    except ImportError:
        return None
    if isinstance(try_to_load_from_cache(repo, marker), str):
        return None
    why = why_hub_cannot_be_asked()
    if why is None:
        try:
            HfApi().model_info(repo, timeout=10)
        except RepositoryNotFoundError:
            return (
                "is not on the Hugging Face Hub (or is private to others)",
                "check the id (org/name), log in for a private one (hf auth login, or HF_TOKEN), or give a local "
                "folder",
            )
        except Exception as exc:  # a proxy's refusal, a timeout: what the worker would have met
            why = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no answer'}"
    if why is None:
        return None
    return (
        f"is not in this machine's Hugging Face cache, and the Hub cannot be reached ({why})",
        f"download it where there is a network (hf download {repo}) into this machine's cache ($HF_HOME), or give "
        "the model's local folder",
    )
