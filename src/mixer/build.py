"""The build, one way: recipe → validate → resolve → (no-op check) → load → dedup → plan → mix → write (+ lock).

This module decides whether a build is needed, from the recipe and the input hashes alone, without importing
polars (a no-op rebuild is a fraction of a second); the steps themselves are sequenced in mixer.pipeline.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mixer import __version__
from mixer.benchmark_sets import ResolvedBenchmark, resolve_benchmarks
from mixer.claims import clear_leftovers
from mixer.errors import MixerError
from mixer.hashing import file_sha256, fingerprint
from mixer.lock import check_lock, lock_content, lock_is_current, write_lock
from mixer.outputs import listed_shards, read_manifest
from mixer.recipe import Recipe
from mixer.resolve import ResolvedSource, default_cache_dir, resolve_recipe
from mixer.validate import load_recipe

if TYPE_CHECKING:
    from mixer.plan import Plan


@dataclass(frozen=True)
class Options:
    data_dir: Path | None = None
    sample: bool = False
    cache_dir: Path | None = None
    progress: bool = True
    refresh: bool = False  # ask the hub again for the commits of moving revisions (not those in the lock)

    @property
    def cache(self) -> Path:
        """Where hub copies, input hashes, counts and evolve calls are kept ($MIXER_CACHE_DIR by default)."""
        return self.cache_dir or default_cache_dir()


@dataclass
class BuildResult:
    status: str  # "built" | "up-to-date"
    out_dir: Path
    plan: Plan | None
    manifest: dict[str, Any]
    lock: Path | None
    replaced: str | None = None  # the other recipe whose mixture the folder held, in words


def _previous_manifest(out_dir: Path) -> dict[str, Any] | None:
    """The manifest of the build the output folder holds, or None (no build there, or one that cannot be read:
    then there is nothing to keep or to name, and the build goes ahead)."""
    if not (out_dir / "manifest.json").is_file():
        return None
    try:
        return read_manifest(out_dir)
    except MixerError:
        return None


def _other_recipes_mixture(previous: dict[str, Any] | None, recipe: Recipe) -> str | None:
    """Whose mixture a build is about to replace, when it is another recipe's: a copied recipe that kept the
    original's `output.dir` replaces that mixture, which nothing else would tell."""
    built = (previous or {}).get("recipe")
    if not isinstance(built, dict) or built.get("name") == recipe.name:
        return None
    return f"recipe {built.get('name')!r}" + (f" ({built['path']})" if built.get("path") else "")


def resolve_inputs(recipe: Recipe, options: Options) -> list[ResolvedSource]:
    return resolve_recipe(
        recipe,
        data_dir=options.data_dir,
        sample=options.sample,
        cache_dir=options.cache,
        refresh=options.refresh,
        progress=options.progress,
    )


def input_fingerprint(resolved: list[ResolvedSource]) -> str:
    return fingerprint({r.spec.name: [f.sha256 for f in r.files] for r in resolved})


def resolve_benchmark_inputs(recipe: Recipe, options: Options) -> list[ResolvedBenchmark]:
    """Once per command, like the sources: every later step reads the same files at the same commits."""
    return resolve_benchmarks(recipe, data_dir=options.data_dir, cache_dir=options.cache, refresh=options.refresh)


def auxiliary_inputs(recipe: Recipe, benchmarks: list[ResolvedBenchmark]) -> dict[str, str]:
    """sha256 of the files a build reads besides its sources (benchmarks, tokenizer): a change to one of them
    must make the next build rebuild, not report "up to date"."""
    digests = {f"benchmark:{b.name}": b.file.sha256 for b in benchmarks}
    if recipe.output.tokenizer:
        path = recipe.base_dir / recipe.output.tokenizer
        path = path / "tokenizer.json" if path.is_dir() else path
        if path.is_file():
            digests["tokenizer"] = file_sha256(path)
    return digests


def build_fingerprint(
    recipe: Recipe, resolved: list[ResolvedSource], benchmarks: list[ResolvedBenchmark], options: Options
) -> str:
    return fingerprint(
        {
            "tool": __version__,
            "recipe": recipe.mixture_document,
            "sample": options.sample,
            "inputs": input_fingerprint(resolved),
            "auxiliary": auxiliary_inputs(recipe, benchmarks),
        }
    )


def _up_to_date(manifest: dict[str, Any], out_dir: Path, build_fp: str) -> bool:
    """Whether the output folder's build (`manifest`) is of this very recipe and inputs, with its shards whole."""
    if manifest.get("build_fingerprint") != build_fp:
        return False
    try:
        listed_shards(out_dir, manifest)
    except MixerError:  # a shard missing or cut short: built again
        return False
    return True


def _clear_killed_builds(out_dir: Path) -> None:
    """A build killed with -9 leaves its temp dir (up to the size of the mixture) beside the output. Rebuilding
    the same recipe is what a user does next, and it has nothing to write: it clears them too, not only a build
    that writes. Best effort: an up-to-date output is still up to date when the folder cannot be listed."""
    with contextlib.suppress(OSError):
        clear_leftovers(out_dir)


def refuse_inputs_in_output(resolved: list[ResolvedSource], out_dir: Path) -> None:
    """A source whose path matches files in the output folder (`data/**/*.parquet` with `output.dir: data/out`)
    read the previous mixture as input: every rebuild mixed its own output in again and grew."""
    inside = os.path.join(out_dir.resolve(), "")  # with a trailing separator: out/a is not below out/ab
    for source in resolved:
        for file in source.files:
            # below it (an output path that is a file is refused later); strings, not Path.parents: a source of
            # 1,000 files spent 0.04 s here on every build
            if os.path.realpath(file.path).startswith(inside):
                raise MixerError(
                    f"sources.{source.spec.name}: {file.path} is in the output folder {out_dir}, which this build "
                    "writes: the mixture would be read back in as input",
                    "narrow the source's `path:` so it does not match the output, or write the output elsewhere "
                    "(output.dir, or --out)",
                )


def load_mixture_recipe(recipe_path: Path, command: str) -> Recipe:
    """`load_recipe` for a command about the mixture, which a recipe of training stages alone does not have."""
    recipe = load_recipe(recipe_path)
    if not recipe.sources:
        raise MixerError(
            f"{recipe_path}: no `sources:`, so no mixture to {command}",
            f"`mixer train {recipe_path}` runs its stages, which read data of their own; add `sources:` for a mixture",
        )
    return recipe


def output_dir(recipe: Recipe) -> Path:
    return Path(recipe.output.dir) if Path(recipe.output.dir).is_absolute() else Path.cwd() / recipe.output.dir


def build(
    recipe_path: Path, options: Options, *, out: Path | None = None, locked: bool = False, force: bool = False
) -> BuildResult:
    if locked and options.refresh:
        raise MixerError(
            "--locked and --refresh contradict each other",
            "--locked builds the commits in recipe.lock; --refresh asks the hub for new ones: pick one",
        )
    if locked and options.sample:
        raise MixerError(
            "--locked and --sample contradict each other",
            "--locked checks the inputs against recipe.lock; --sample builds the bundled samples, which no lock"
            " records: pick one",
        )
    recipe = load_mixture_recipe(recipe_path, "build")
    resolved = resolve_inputs(recipe, options)
    out_dir = out or output_dir(recipe)
    refuse_inputs_in_output(resolved, out_dir)
    benchmarks = resolve_benchmark_inputs(recipe, options)
    lock = lock_content(recipe.name, resolved, benchmarks)
    if locked:
        check_lock(recipe.path, lock)
    build_fp = build_fingerprint(recipe, resolved, benchmarks, options)
    previous = _previous_manifest(out_dir)
    if not force and previous is not None and _up_to_date(previous, out_dir, build_fp):
        _clear_killed_builds(out_dir)
        # a lock deleted, cut short by a full disk or edited by hand is written again; a current one is left alone
        stale_lock = not options.sample and not lock_is_current(recipe.path, lock)
        return BuildResult("up-to-date", out_dir, None, previous, write_lock(recipe.path, lock) if stale_lock else None)

    from mixer.pipeline import materialise  # polars and the rest load only when there is work to do

    replaced = _other_recipes_mixture(previous, recipe)
    plan, manifest = materialise(recipe, resolved, benchmarks, options, out_dir, build_fp)
    lock_file = None if options.sample else write_lock(recipe.path, lock)
    return BuildResult("built", out_dir, plan, manifest, lock_file, replaced)
