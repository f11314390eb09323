"""Locate data shipped with mixer: from the source tree in a checkout, from package data in a wheel."""

from __future__ import annotations

from pathlib import Path


def resource_dir(name: str) -> Path:
    """Return the directory `schemas` or `sources`.

    A checkout (editable install) keeps them at the repository top level, where users edit them; a wheel
    carries copies under mixer/_data/.
    """
    packaged = Path(__file__).parent / "_data" / name
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[2] / name
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(f"mixer data directory {name!r} not found (looked in {packaged} and {checkout})")
