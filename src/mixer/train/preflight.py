"""Checks before any worker starts, so a stage that cannot run stops `mixer train` at once, with its reason:
its conversations, one of each shape of turns, rendered through its chat template (a template that refuses a
turn, Gemma's of a system turn, stopped every worker after loading the model), and a hub model that is neither
in this machine's Hugging Face cache nor reachable (each worker retried every file for ~25 s, and the reason
ended up above a launcher traceback).
"""

from __future__ import annotations

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


def check_hub_models(config: StageConfig) -> None:
    """The stage's model and tokenizer, when they are hub ids: in the Hugging Face cache, or on a hub that
    answers. A connection and one request; nothing when the cache has them."""
    checked = (("model", config.model, "config.json"), ("tokenizer", config.tokenizer, "tokenizer_config.json"))
    for what, repo, marker in checked:
        if not repo or not HUB_ID.fullmatch(repo) or Path(repo).exists():
            continue
        if (problem := _hub_problem(repo, marker)) is not None:
            raise MixerError(f"stage {config.name}: {what} {repo!r} {problem[0]}", problem[1])


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
