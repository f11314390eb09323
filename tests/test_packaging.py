"""The dependency floors pyproject.toml declares are the versions tests/minimum-versions.txt pins, which the
suite is run against (README, "Development"): a floor raised or lowered in one file alone would claim support
that was never tested."""

from __future__ import annotations

import re

import pytest

from conftest import REPO

UNPINNED = {"torch"}  # one CPU wheel (2.13) on the machines the suite runs on: its floor cannot be run


def _floors() -> dict[str, str]:
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    floors = {}
    for requirement in project["dependencies"] + project["optional-dependencies"]["train"]:
        found = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9][0-9A-Za-z.]*)(?:,<[0-9.]+)?", requirement.replace(" ", ""))
        assert found, f"{requirement!r}: every dependency has a floor (>=X, optionally ,<Y)"
        if found[1].lower() not in UNPINNED:
            floors[found[1].lower()] = found[2]
    return floors


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "tests" / "minimum-versions.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.lower()] = version
    return pins


def _release(version: str) -> tuple[int, ...]:
    """1.42 and 1.42.0 are the same floor."""
    parts = [int(p) for p in version.split(".")]
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def test_each_dependency_floor_is_the_version_the_minimum_run_pins():
    floors, pins = _floors(), _pins()
    assert sorted(floors) == sorted(pins)
    assert {name: _release(v) for name, v in floors.items()} == {name: _release(v) for name, v in pins.items()}
