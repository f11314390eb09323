"""Remembered per-source counts, so `mixer plan` answers at once while a team tunes takes and weights.

What a source has available depends on its inputs' contents, its own settings except the selector, the
mixture-wide filters, dedup and decontamination (with the benchmark files' contents), and (through dedup) the
sources before it; the key hashes exactly those. Changing a take, fraction, weight, total or seed reuses the
entry; changing a file, a filter or a benchmark file does not. Recipes with evolve blocks are always planned
from the data (what a teacher returns is not an input file).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mixer.files import write_cache_file
from mixer.hashing import code_fingerprint, fingerprint
from mixer.plan import PoolSummary
from mixer.recipe import Recipe
from mixer.resolve import ResolvedSource

SELECTOR_KEYS = ("take", "fraction", "weight")


def cacheable(recipe: Recipe) -> bool:
    return not recipe.evolve


def counts_key(recipe: Recipe, resolved: list[ResolvedSource], sample: bool, auxiliary: dict[str, str]) -> str:
    """`auxiliary`: sha256 of the other files the counts depend on (benchmarks), by role."""
    sources = []
    for source in resolved:
        spec = recipe.document["sources"][source.spec.name]
        sources.append(
            {
                "name": source.spec.name,
                "spec": {k: v for k, v in spec.items() if k not in SELECTOR_KEYS},
                "inputs": [f.sha256 for f in source.files],
                # a source that adds no rows takes none from the sources after it by dedup: their counts differ
                "adds_no_rows": source.spec.selector.takes_nothing,
            }
        )
    mixture = {k: v for k, v in (recipe.document.get("mixture") or {}).items() if k not in ("total", "shuffle")}
    return fingerprint(
        {"code": code_fingerprint(), "sample": sample, "mixture": mixture, "sources": sources, "auxiliary": auxiliary}
    )


def _path(cache_dir: Path, key: str) -> Path:
    return cache_dir / "plan-counts" / f"{key}.json"


def load(cache_dir: Path, key: str, resolved: list[ResolvedSource]) -> list[PoolSummary] | None:
    try:
        entries: dict[str, Any] = json.loads(_path(cache_dir, key).read_text(encoding="utf-8"))
        return [PoolSummary(r, **entries[r.spec.name]) for r in resolved]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save(cache_dir: Path, key: str, summaries: list[PoolSummary]) -> None:
    body = {s.source.spec.name: {"available": s.available, "chars": s.chars, "counts": s.counts} for s in summaries}
    write_cache_file(_path(cache_dir, key), json.dumps(body, sort_keys=True))
