"""Find each source's input files: recipe path → --data-dir / MIXER_DATA_DIR → hub (datasets) → clear error.

With `sample=True`, registry sources read their bundled sample instead, so any recipe builds offline.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mixer.adapters.formats import SUPPORTED_SUFFIXES
from mixer.errors import MixerError
from mixer.hashing import FileHashes, file_sha256
from mixer.recipe import Recipe, SourceSpec
from mixer.registry import RegistryEntry, load_registry
from mixer.validate import expand_paths


@dataclass(frozen=True)
class InputFile:
    path: Path
    sha256: str
    bytes: int

    def to_json(self, relative_to: Path | None = None) -> dict:
        shown = self.path
        if relative_to is not None:
            try:
                shown = self.path.resolve().relative_to(relative_to.resolve())
            except ValueError:
                shown = self.path
        return {"path": str(shown), "sha256": self.sha256, "bytes": self.bytes}


@dataclass(frozen=True)
class ResolvedSource:
    spec: SourceSpec
    entry: RegistryEntry | None
    format: str
    origin: str  # path | data_dir | sample | hub
    files: tuple[InputFile, ...]
    revision: str | None
    license: str

    @property
    def fields(self) -> dict[str, str]:
        return {**(self.entry.fields if self.entry else {}), **self.spec.fields}

    @property
    def options(self) -> dict:
        return {**(self.entry.options if self.entry else {}), **self.spec.options}

    @property
    def on_error(self) -> str:
        return self.spec.on_error or (self.entry.on_error if self.entry else "error")


def _input_files(paths: list[Path], hashes: FileHashes | None) -> tuple[InputFile, ...]:
    digest = hashes.sha256 if hashes is not None else file_sha256
    return tuple(InputFile(p, digest(p), p.stat().st_size) for p in paths)


def _from_data_dir(name: str, data_dir: Path) -> list[Path]:
    folder = data_dir / name
    if folder.is_dir():
        return sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(SUPPORTED_SUFFIXES))
    return [data_dir / f"{name}{suffix}" for suffix in SUPPORTED_SUFFIXES if (data_dir / f"{name}{suffix}").is_file()][
        :1
    ]


def _from_hub(entry: RegistryEntry, cache_dir: Path) -> list[Path]:
    """Download through `datasets` once and keep a parquet copy named by the pinned revision."""
    hub = entry.hub
    assert hub is not None
    target = cache_dir / entry.name / f"{hub.revision}.parquet"
    if target.is_file():
        return [target]
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        raise OSError("offline mode (HF_HUB_OFFLINE=1)")
    import datasets  # imported here: it is slow to import and only needed for hub sources

    dataset = datasets.load_dataset(
        hub.id, name=hub.config, revision=hub.revision, split=hub.split, data_files=hub.data_files
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".parquet.partial")
    dataset.to_parquet(str(partial))
    partial.replace(target)
    return [target]


def resolve_source(
    spec: SourceSpec,
    base_dir: Path,
    *,
    data_dir: Path | None,
    sample: bool,
    cache_dir: Path,
    hashes: FileHashes | None = None,
) -> ResolvedSource:
    entry = load_registry().get(spec.registry) if spec.registry else None
    fmt = spec.format or (entry.format if entry else None)
    assert fmt is not None, "validated recipes name a format"
    revision, license_ = (entry.hub.revision if entry and entry.hub else None), (entry.license if entry else "unknown")
    if sample and entry is not None:
        return ResolvedSource(
            spec, entry, fmt, "sample", _input_files([entry.sample], hashes), "bundled-sample", license_
        )
    if spec.paths:
        files = [f for raw in spec.paths for f in expand_paths(raw, base_dir)]
        if not files:
            raise MixerError(f"sources.{spec.name}: no file matches {list(spec.paths)}")
        return ResolvedSource(spec, entry, fmt, "path", _input_files(files, hashes), None, license_)
    assert entry is not None
    if data_dir is not None:
        files = _from_data_dir(entry.name, data_dir)
        if files:
            return ResolvedSource(spec, entry, fmt, "data_dir", _input_files(files, hashes), revision, license_)
    hint = (
        f"download it elsewhere and put it at <data dir>/{entry.name}.jsonl (or .json/.parquet/...), then pass "
        f"--data-dir DIR or set MIXER_DATA_DIR; or give `path:` in the recipe; or build with --sample to use "
        f"the bundled sample"
    )
    if entry.hub is None:
        raise MixerError(f"sources.{spec.name}: no local data for {entry.name!r} and no hub location", hint)
    try:
        files = _from_hub(entry, cache_dir)
    except Exception as exc:  # network, auth, missing revision: all mean "supply it offline"
        raise MixerError(
            f"sources.{spec.name}: cannot load {entry.hub.id}@{entry.hub.revision} from the hub "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'})",
            hint,
        ) from None
    return ResolvedSource(spec, entry, fmt, "hub", _input_files(files, hashes), revision, license_)


def default_cache_dir() -> Path:
    return Path(os.environ.get("MIXER_CACHE_DIR", Path.home() / ".cache" / "mixer"))


def resolve_recipe(
    recipe: Recipe, *, data_dir: Path | None = None, sample: bool = False, cache_dir: Path | None = None
) -> list[ResolvedSource]:
    if data_dir is None and os.environ.get("MIXER_DATA_DIR"):
        data_dir = Path(os.environ["MIXER_DATA_DIR"])
    cache = cache_dir or default_cache_dir()
    hashes = FileHashes(cache / "file-hashes.json")
    resolved = [
        resolve_source(s, recipe.base_dir, data_dir=data_dir, sample=sample, cache_dir=cache, hashes=hashes)
        for s in recipe.base_sources
    ]
    hashes.save()
    return resolved
