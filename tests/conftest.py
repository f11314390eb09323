"""Shared fixtures: recipe writing, CLI runs in a subprocess, and the real data in ../shared (optional)."""

from __future__ import annotations

import copy
import os
import random
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def _test_caches(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("caches")


@pytest.fixture(autouse=True)
def _offline(monkeypatch, _test_caches):
    """Tests never reach the network (the hub path must fail fast instead of hanging) and never write to the
    user's caches: mixer's (input hashes and counts would carry over between runs) and datasets' (every
    `load_dataset` of a built mixture leaves an arrow copy of it)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.delenv("MIXER_DATA_DIR", raising=False)
    monkeypatch.setenv("MIXER_CACHE_DIR", str(_test_caches / "mixer"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(_test_caches / "datasets"))


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not available: {SHARED_DATA} is absent (CI provides ../shared beside the clone)")
    return SHARED_DATA


def write_recipe(folder: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def run_mixer(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 120):
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "mixer", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def swapped_values(bases: list[Any], values: list[Any], seed: int, count: int, most: int = 3) -> Iterator[Any]:
    """`count` copies of documents drawn from `bases`, each with 1 to `most` values (at any depth, the whole
    document included) replaced by a copy of one of `values`, from a fixed seed so a failure repeats: input
    of every shape, for checking that it is reported and never raised."""
    rng = random.Random(seed)

    def places(node: Any, where: tuple = ()) -> Iterator[tuple]:
        yield where
        children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, child in children:
            yield from places(child, (*where, key))

    for _ in range(count):
        doc = copy.deepcopy(rng.choice(bases))
        for _ in range(rng.randint(1, most)):
            where = rng.choice(list(places(doc)))
            value = copy.deepcopy(rng.choice(values))
            if not where:
                doc = value
                continue
            parent = doc
            for key in where[:-1]:
                parent = parent[key]
            parent[where[-1]] = value
        yield doc
