"""Where each benchmark of `mixture.decontaminate` comes from: the recipe's `path` → `<name>.*` in --data-dir
(or $MIXER_DATA_DIR) → for a known benchmark, the hub through `datasets` → a clear error.

A benchmark file is an input like any source: in remove mode it decides which rows are written, in report mode
what the report says. So it is resolved once per command, its sha256 keys the build fingerprint and the caches,
and recipe.lock records it; a hub copy is read at a commit (the lock's, so a committed lock reads the same items
everywhere) and kept in the cache as parquet.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixer.errors import MixerError
from mixer.hashing import FileHashes
from mixer.key_hints import did_you_mean
from mixer.lock import locked_benchmark_revisions
from mixer.recipe import BenchmarkSpec, Recipe
from mixer.registry import HubRef
from mixer.resolve import (
    HubUnavailable,
    InputFile,
    Unsupplied,
    existing_data_dir,
    input_files,
    named_in_data_dir,
    read_from_hub,
    unsupplied_at_once,
)
from mixer.saved_dataset import one_split_hint, saved_dataset_files, saved_splits


@dataclass(frozen=True)
class KnownBenchmark:
    fields: tuple[str, ...]  # what a model is asked
    hub: HubRef


# Big-Bench Hard: one hub config per task, as lm-evaluation-harness reads them
BBH_TASKS = (
    "boolean_expressions",
    "causal_judgement",
    "date_understanding",
    "disambiguation_qa",
    "dyck_languages",
    "formal_fallacies",
    "geometric_shapes",
    "hyperbaton",
    "logical_deduction_five_objects",
    "logical_deduction_seven_objects",
    "logical_deduction_three_objects",
    "movie_recommendation",
    "multistep_arithmetic_two",
    "navigate",
    "object_counting",
    "penguins_in_a_table",
    "reasoning_about_colored_objects",
    "ruin_names",
    "salient_translation_error_detection",
    "snarks",
    "sports_understanding",
    "temporal_sequences",
    "tracking_shuffled_objects_five_objects",
    "tracking_shuffled_objects_seven_objects",
    "tracking_shuffled_objects_three_objects",
    "web_of_lies",
    "word_sorting",
)


KNOWN: dict[str, KnownBenchmark] = {
    "humaneval": KnownBenchmark(("prompt",), HubRef("openai/openai_humaneval", "main", split="test")),
    "mbpp": KnownBenchmark(("text",), HubRef("google-research-datasets/mbpp", "main", split="test", config="full")),
    "gsm8k": KnownBenchmark(("question",), HubRef("openai/gsm8k", "main", split="test", config="main")),
    "mmlu": KnownBenchmark(("question",), HubRef("cais/mmlu", "main", split="test", config="all")),
    "bbh": KnownBenchmark(("input",), HubRef("lukaemon/bbh", "main", split="test", configs=BBH_TASKS)),
    "alpaca_eval": KnownBenchmark(
        ("instruction",), HubRef("tatsu-lab/alpaca_eval", "main", data_files="alpaca_eval.json")
    ),
    "ifeval": KnownBenchmark(("prompt",), HubRef("google/IFEval", "main")),
}


@dataclass(frozen=True)
class ResolvedBenchmark:
    spec: BenchmarkSpec
    file: InputFile
    origin: str  # path | data_dir | hub
    hub: str | None = None  # the hub dataset, when read from the hub
    revision: str | None = None  # its commit

    @property
    def name(self) -> str:
        return self.spec.name

    def to_lock(self) -> dict[str, Any]:
        return {"origin": self.origin, "hub": self.hub, "revision": self.revision, "files": [self.file.to_json()]}


def resolve_benchmarks(
    recipe: Recipe, *, data_dir: Path | None, cache_dir: Path, refresh: bool = False
) -> list[ResolvedBenchmark]:
    """Every benchmark of the recipe's `mixture.decontaminate` (none without it). Local files are found first,
    so a benchmark that cannot be had anywhere (a misspelt name) is reported before any download starts."""
    if recipe.mixture.decontaminate is None:
        return []
    data_dir = existing_data_dir(data_dir)
    specs = recipe.mixture.decontaminate.benchmarks
    local = [_local_file(spec, recipe.base_dir, data_dir) for spec in specs]
    for spec, found in zip(specs, local, strict=True):
        if found is None:
            _hub_of(spec)  # raises for a benchmark with no hub location
    hashes = FileHashes(cache_dir / "file-hashes.json")
    locked = locked_benchmark_revisions(recipe)
    resolved = []
    unsupplied: list[MixerError] = []
    for spec, found in zip(specs, local, strict=True):
        if found is not None:
            path, label, origin = found
            resolved.append(ResolvedBenchmark(spec, input_files([(path, label)], hashes)[0], origin))
            continue
        try:
            resolved.append(_from_hub(spec, cache_dir, hashes, locked.get(spec.name), refresh))
        except HubUnavailable as failure:
            unsupplied.append(Unsupplied(failure, f"{spec.name}.jsonl", _hint([spec.name])))
    hashes.save()
    if unsupplied:
        raise unsupplied[0] if len(unsupplied) == 1 else unsupplied_at_once(unsupplied, "benchmarks", _hint_for_files)
    return resolved


def _local_file(spec: BenchmarkSpec, base_dir: Path, data_dir: Path | None) -> tuple[Path, str, str] | None:
    """(path, label, origin) of the recipe's `path` or of <name>.* in the data dir; None when neither is given."""
    if spec.path:
        path = Path(os.path.expanduser(spec.path))
        label = str(path) if path.is_absolute() else Path(spec.path).as_posix()
        path = path if path.is_absolute() else base_dir / path
        if path.is_dir():
            path = _file_of_folder(spec.name, path, spec.path)
        if not path.is_file():
            raise MixerError(
                f"benchmark {spec.name}: {path} does not exist", "check decontaminate: path (relative to the recipe)"
            )
        return path, label, "path"
    if data_dir is not None and (found := named_in_data_dir(spec.name, data_dir, "benchmark")) is not None:
        return found, f"data-dir:{found.name}", "data_dir"
    return None


def _file_of_folder(name: str, folder: Path, shown: str) -> Path:
    """A benchmark is one file; a folder `datasets` saved it to holds it in one Arrow file, read as that file."""
    files = saved_dataset_files(folder)
    if files is not None and len(files) == 1:
        return files[0]
    splits = saved_splits(folder)
    hint = one_split_hint(splits, shown) if splits else "name the file that holds the benchmark's prompts"
    if files is not None:
        hint = f"a benchmark is read from one file, and {len(files)} hold this one: save it with num_shards=1"
    raise MixerError(f"benchmark {name}: {folder} is a folder, not a file", hint)


def _hint(names: list[str]) -> str:
    paths = ", ".join(f"{{name: {name}, path: <file>}}" for name in names)
    files = ", ".join(f"{name}.jsonl" for name in names)
    return (
        f"give decontaminate: [{paths}], or put {files} (or .json, .parquet, .jsonl.gz, ...) in --data-dir DIR / "
        f"$MIXER_DATA_DIR"
    )


def _hint_for_files(failures: list[Unsupplied]) -> str:
    return _hint([failure.data_file.removesuffix(".jsonl") for failure in failures])


def _hub_of(spec: BenchmarkSpec) -> HubRef:
    known = KNOWN.get(spec.name)
    if known is None:
        raise MixerError(
            f"benchmark {spec.name!r}: no local file, and not a known benchmark ({', '.join(sorted(KNOWN))})",
            did_you_mean(spec.name, sorted(KNOWN)) or _hint([spec.name]),
        )
    return known.hub


def _from_hub(
    spec: BenchmarkSpec, cache_dir: Path, hashes: FileHashes, locked: tuple[str, str] | None, refresh: bool
) -> ResolvedBenchmark:
    hub = _hub_of(spec)
    key = f"benchmark-{spec.name}"  # beside the sources' hub copies, apart from a source of the same name
    pinned = locked[1] if locked and locked[0] == hub.id else None
    path, commit = read_from_hub(key, hub, cache_dir, pinned, refresh, f"benchmark {spec.name!r}", _hint([spec.name]))
    file = input_files([(path, f"hub:{hub.id}@{commit}")], hashes)[0]
    return ResolvedBenchmark(spec, file, "hub", hub.id, commit)
