"""A stage's conversations, one of each shape of turns, rendered through its chat template before any worker
starts: a template that refuses a turn (Gemma's, a system turn) then stops `mixer train` at once, where every
worker stopped after loading the model.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import polars as pl

from mixer.errors import MixerError
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
