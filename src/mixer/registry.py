"""The sources/ registry: one YAML file per known dataset (format, hub location, license, sample)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from mixer.errors import MixerError
from mixer.resources import resource_dir
from mixer.yamlpos import load_packaged


@dataclass(frozen=True)
class HubRef:
    id: str
    revision: str
    split: str = "train"
    config: str | None = None
    configs: tuple[str, ...] = ()  # several configs read in this order and concatenated (BBH: one per task)
    data_files: str | None = None
    format: str | None = None  # of the hub's copy, when it is not the native files' (`format` of the entry)


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    description: str
    format: str
    license: str
    citation: str
    expected_rows: int
    sample: Path
    hub: HubRef | None = None
    homepage: str | None = None
    fields: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    on_error: str = "error"
    file: Path | None = None


def _entry(path: Path) -> RegistryEntry:
    try:
        data = load_packaged(path.read_text(encoding="utf-8"))
        hub = data.pop("hub", None)
        return RegistryEntry(
            **{k: v for k, v in data.items() if k != "sample"},
            sample=path.parent / data["sample"],
            hub=HubRef(**hub) if hub else None,
            file=path,
        )
    except (TypeError, KeyError, yaml.YAMLError) as exc:
        raise MixerError(f"{path}: invalid registry entry: {exc}") from None


@cache
def load_registry(directory: Path | None = None) -> dict[str, RegistryEntry]:
    """All entries by name; `directory` defaults to the bundled sources/."""
    root = directory or resource_dir("sources")
    entries = {}
    for path in sorted(root.glob("*.yaml")):
        entry = _entry(path)
        if entry.name != path.stem:
            raise MixerError(f"{path}: entry name {entry.name!r} must match the file name {path.stem!r}")
        entries[entry.name] = entry
    return entries
