"""The build pipeline, one way: recipe → validate → resolve → load → dedup → plan → mix → write (+ lock).

Each step is a function in its own module; this file only sequences them and decides on no-op rebuilds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.progress import Progress

from mixer import __version__
from mixer.hashing import fingerprint
from mixer.load import Pool, load_pool
from mixer.lock import check_lock, lock_content, write_lock
from mixer.mix import dedup_pools, mix
from mixer.plan import Plan, make_plan
from mixer.progress import make_progress
from mixer.recipe import Recipe
from mixer.resolve import ResolvedSource, resolve_recipe
from mixer.validate import load_recipe
from mixer.write import atomic_dir, dataset_card, git_info, write_json, write_shards


@dataclass(frozen=True)
class Options:
    data_dir: Path | None = None
    sample: bool = False
    cache_dir: Path | None = None
    progress: bool = True


@dataclass
class BuildResult:
    status: str  # "built" | "up-to-date"
    out_dir: Path
    plan: Plan | None
    manifest: dict[str, Any]
    lock: Path | None


def input_fingerprint(resolved: list[ResolvedSource]) -> str:
    return fingerprint({r.spec.name: [f.sha256 for f in r.files] for r in resolved})


def load_pools(recipe: Recipe, resolved: list[ResolvedSource], progress: Progress) -> list[Pool]:
    task = progress.add_task("loading sources", total=len(resolved))
    pools = []
    for source in resolved:
        pools.append(load_pool(source, recipe.mixture.drop_patterns))
        progress.advance(task)
    if recipe.mixture.dedup == "exact":
        dedup_pools(pools)
    return pools


def plan_recipe(recipe_path: Path, options: Options) -> tuple[Recipe, list[ResolvedSource], list[Pool], Plan]:
    recipe = load_recipe(recipe_path)
    resolved = resolve_recipe(recipe, data_dir=options.data_dir, sample=options.sample, cache_dir=options.cache_dir)
    with make_progress(options.progress) as progress:
        pools = load_pools(recipe, resolved, progress)
    plan = make_plan(recipe, pools, sample=options.sample, input_fingerprint=input_fingerprint(resolved))
    return recipe, resolved, pools, plan


def build_fingerprint(recipe: Recipe, resolved: list[ResolvedSource], sample: bool) -> str:
    return fingerprint(
        {"tool": __version__, "recipe": recipe.document, "sample": sample, "inputs": input_fingerprint(resolved)}
    )


def _up_to_date(out_dir: Path, build_fp: str) -> dict[str, Any] | None:
    manifest_path = out_dir / "manifest.json"
    if not manifest_path.is_file():
        return None
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except ValueError:
        return None
    if manifest.get("build_fingerprint") != build_fp:
        return None
    for shard in manifest.get("shards", []):
        path = out_dir / shard["file"]
        if not path.is_file() or path.stat().st_size != shard.get("bytes"):
            return None
    return manifest


def manifest_for(
    recipe: Recipe, plan: Plan, build_fp: str, shards: list[dict], written: dict[str, int], pools: list[Pool]
) -> dict[str, Any]:
    return {
        "mixer_version": __version__,
        "recipe": {"name": recipe.name, "path": str(recipe.path), "git": git_info(recipe.path)},
        "resolved_recipe": recipe.document,
        "seed": recipe.seed,
        "sample": plan.sample,
        "plan_fingerprint": plan.fingerprint,
        "build_fingerprint": build_fp,
        "totals": {"rows": plan.total_rows, "est_tokens": plan.est_tokens, "shards": len(shards)},
        "sources": {
            s.name: {
                "format": s.format,
                "origin": s.origin,
                "registry": s.registry,
                "revision": s.revision,
                "license": s.license,
                "selector": s.selector,
                "files": list(s.files),
                "counts": {
                    **s.counts,
                    "available": s.available,
                    "selected": s.selected,
                    "written": written.get(s.name, 0),
                },
                "upsample": s.upsample,
                "est_tokens": s.est_tokens,
                "quarantined": pool.rejects.height if pool.rejects is not None else 0,
            }
            for s, pool in zip(plan.sources, pools, strict=True)
        },
        "shards": shards,
    }


def build(
    recipe_path: Path, options: Options, *, out: Path | None = None, locked: bool = False, force: bool = False
) -> BuildResult:
    recipe = load_recipe(recipe_path)
    resolved = resolve_recipe(recipe, data_dir=options.data_dir, sample=options.sample, cache_dir=options.cache_dir)
    lock = lock_content(recipe.name, resolved, recipe.base_dir)
    if locked:
        check_lock(recipe.path, lock)
    out_dir = out or (
        Path(recipe.output.dir) if Path(recipe.output.dir).is_absolute() else Path.cwd() / recipe.output.dir
    )
    build_fp = build_fingerprint(recipe, resolved, options.sample)
    if not force and (manifest := _up_to_date(out_dir, build_fp)) is not None:
        return BuildResult("up-to-date", out_dir, None, manifest, None)

    with make_progress(options.progress) as progress:
        pools = load_pools(recipe, resolved, progress)
        plan = make_plan(recipe, pools, sample=options.sample, input_fingerprint=input_fingerprint(resolved))
        task = progress.add_task("mixing", total=1)
        rows = mix(pools, {s.name: s.selected for s in plan.sources}, recipe.seed, recipe.mixture.shuffle)
        progress.advance(task)
        written = dict(rows.group_by("dataset").len().iter_rows())
        with atomic_dir(out_dir) as temp:
            shards = write_shards(rows, temp / "data", recipe.output.shard_rows)
            for shard in shards:
                shard["bytes"] = (temp / shard["file"]).stat().st_size
            rejects = [p for p in pools if p.rejects is not None]
            if rejects:
                (temp / "rejects").mkdir()
                for pool in rejects:
                    pool.rejects.write_ndjson(temp / "rejects" / f"{pool.name}.jsonl")
            manifest = manifest_for(recipe, plan, build_fp, shards, written, pools)
            write_json(temp / "manifest.json", manifest)
            (temp / "README.md").write_text(dataset_card(plan, manifest, recipe.description), encoding="utf-8")
    lock_file = None if options.sample else write_lock(recipe.path, lock)
    return BuildResult("built", out_dir, plan, manifest, lock_file)
