"""The sources/ registry: one YAML file per known dataset (format, hub location, license, sample)."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
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


def _keys_problem(data: Any, cls: type) -> str | None:
    """Which keys a mapping lacks or has too many for `cls`, in words (a bare KeyError says only `'sample'`)."""
    if not isinstance(data, dict):
        return "expected a mapping of keys"
    known = {f.name for f in fields(cls)} - {"file"}
    required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING} - {"file"}
    missing, unknown = sorted(required - set(data)), sorted(set(data) - known)
    problems = [f"missing {', '.join(missing)}"] if missing else []
    problems += [f"unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})"] if unknown else []
    return "; ".join(problems) or None


def _entry(path: Path) -> RegistryEntry:
    try:
        data = load_packaged(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise MixerError(f"{path}: invalid registry entry: {exc}") from None
    problem = _keys_problem(data, RegistryEntry)
    if problem is None and data.get("hub") is not None and (in_hub := _keys_problem(data["hub"], HubRef)):
        problem = f"hub: {in_hub}"
    if problem:
        raise MixerError(f"{path}: invalid registry entry: {problem}", "see any other file of sources/ for the shape")
    hub = data.pop("hub", None)
    return RegistryEntry(
        **{k: v for k, v in data.items() if k != "sample"},
        sample=path.parent / data["sample"],
        hub=HubRef(**hub) if hub else None,
        file=path,
    )


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
