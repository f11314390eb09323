"""Folders that `datasets` writes with `save_to_disk`, read as a source's files.

A `Dataset` folder holds its rows in Arrow files named, in order, by `state.json`; listing the folder would
also pick up `state.json` and `dataset_info.json` as data. A `DatasetDict` folder holds one such folder per
split (named by `dataset_dict.json`): which split a source reads belongs in the recipe, so it is not guessed.
"""

from __future__ import annotations

import json
from pathlib import Path


def saved_dataset_files(folder: Path) -> list[Path] | None:
    """The Arrow files of a `Dataset.save_to_disk` folder, in the order `datasets` reads them; None when the
    folder is not one (or its `state.json` names no file that is there)."""
    try:
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        files = [folder / entry["filename"] for entry in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return files if files and all(path.is_file() for path in files) else None


def saved_splits(folder: Path) -> list[str] | None:
    """The splits of a `DatasetDict.save_to_disk` folder; None when the folder is not one."""
    try:
        splits = json.loads((folder / "dataset_dict.json").read_text(encoding="utf-8"))["splits"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return [str(split) for split in splits] if isinstance(splits, list) else None


def one_split_hint(splits: list[str], shown: str, *, in_recipe: bool = False) -> str:
    """How to name one split of a DatasetDict folder, `shown` being the folder as the user wrote it (or, found
    in the data dir, where a recipe's `path:` must name it)."""
    example = f"{shown.rstrip('/')}/{'train' if 'train' in splits else splits[0]}"
    where = f" in the recipe, e.g. `path: {example}`" if in_recipe else f", e.g. {example}"
    return f"it is a DatasetDict saved by `datasets` (splits: {', '.join(splits)}): name one split's folder{where}"
