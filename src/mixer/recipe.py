"""Typed recipe model, built from a validated YAML document.

Validation (validate.py) guarantees the shapes here, so this module only translates; it never reports errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mixer.yamlpos import Located

SelectorMode = Literal["take", "all", "fraction", "weight"]


@dataclass(frozen=True)
class Selector:
    """How many rows a source contributes; exactly one mode per source, never an overloaded number."""

    mode: SelectorMode
    value: float | int | None = None

    def describe(self) -> str:
        return "take: all" if self.mode == "all" else f"{self.mode}: {self.value}"


@dataclass(frozen=True)
class Filters:
    min_turns: int | None = None
    max_turns: int | None = None
    max_chars: int | None = None
    lang: tuple[str, ...] | None = None
    drop_patterns: tuple[str, ...] = ()


@dataclass(frozen=True)
class SourceSpec:
    name: str
    registry: str | None
    paths: tuple[str, ...]
    format: str | None
    fields: dict[str, str]
    options: dict[str, Any]
    selector: Selector
    filters: Filters
    on_error: str | None


@dataclass(frozen=True)
class MixtureSpec:
    total: int | None = None
    shuffle: bool = True
    dedup: str = "none"
    drop_patterns: tuple[str, ...] = ()


@dataclass(frozen=True)
class OutputSpec:
    dir: str
    shard_rows: int = 100_000


@dataclass(frozen=True)
class Recipe:
    path: Path
    name: str
    description: str
    seed: int
    sources: tuple[SourceSpec, ...]
    mixture: MixtureSpec
    output: OutputSpec
    document: dict[str, Any] = field(repr=False)  # the interpolated YAML data, for manifests and diffs
    located: Located | None = field(default=None, repr=False, compare=False)

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def source(self, name: str) -> SourceSpec:
        return next(s for s in self.sources if s.name == name)


def selector_of(spec: dict[str, Any]) -> Selector:
    if spec.get("take") == "all":
        return Selector("all")
    for mode in ("take", "fraction", "weight"):
        if mode in spec:
            return Selector(mode, spec[mode])
    raise ValueError("validated source has no selector")


def _as_tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def build_recipe(path: Path, data: dict[str, Any], located: Located | None = None) -> Recipe:
    sources = []
    for name, spec in data["sources"].items():
        sources.append(
            SourceSpec(
                name=name,
                registry=spec.get("source"),
                paths=_as_tuple(spec.get("path")),
                format=spec.get("format"),
                fields=dict(spec.get("fields") or {}),
                options=dict(spec.get("options") or {}),
                selector=selector_of(spec),
                filters=Filters(
                    min_turns=spec.get("min_turns"),
                    max_turns=spec.get("max_turns"),
                    max_chars=spec.get("max_chars"),
                    lang=_as_tuple(spec.get("lang")) or None,
                    drop_patterns=_as_tuple(spec.get("drop_patterns")),
                ),
                on_error=spec.get("on_error"),
            )
        )
    mixture = data.get("mixture") or {}
    output = data.get("output") or {}
    return Recipe(
        path=path,
        name=data["name"],
        description=data.get("description", ""),
        seed=data.get("seed", 42),
        sources=tuple(sources),
        mixture=MixtureSpec(
            total=mixture.get("total"),
            shuffle=mixture.get("shuffle", True),
            dedup=mixture.get("dedup", "none"),
            drop_patterns=_as_tuple(mixture.get("drop_patterns")),
        ),
        output=OutputSpec(dir=output.get("dir", f"out/{data['name']}"), shard_rows=output.get("shard_rows", 100_000)),
        document=data,
        located=located,
    )
