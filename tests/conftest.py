"""Shared fixtures: recipe writing, CLI runs in a subprocess, and the real data in ../shared (optional)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

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
