"""The steps of a build that need data in memory, in order: stage sources (load, decontaminate, dedup), run
evolve blocks, plan, select, write shards, manifest and card. Also `mixer plan`, `mixer evolve` and
`mixer decontam`, which share the first steps.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
from rich.progress import Progress

from mixer import __version__, counts_cache
from mixer.assemble import fill_buckets, held_out_copies_of_training_rows, select, shards
from mixer.build import (
    Options,
    auxiliary_inputs,
    input_fingerprint,
    load_mixture_recipe,
    output_dir,
    refuse_inputs_in_output,
    resolve_benchmark_inputs,
    resolve_inputs,
)
from mixer.decontam import first_prompt
from mixer.errors import MixerError, RecipeInvalid
from mixer.load import Pool, load_chunks
from mixer.memory import release_freed_memory
from mixer.mix import Deduplicator, near_dedup
from mixer.overlap import overlap_matrix
from mixer.plan import Plan, make_plan, summarize
from mixer.progress import make_progress
from mixer.recipe import EvolveSpec, Recipe
from mixer.redact import redacted
from mixer.resolve import ResolvedSource
from mixer.stage import Staged, stage_chunks
from mixer.stats import load_tokenizer, row_features, tokens_method, write_stats
from mixer.threads import wait_for
from mixer.validate import filter_pattern_problems, load_recipe
from mixer.write import (
    BUILD_FILES,
    EVOLVE_FILES,
    atomic_dir,
    dataset_card,
    git_info,
    scratch_dir,
    write_json,
    write_shards,
)

if TYPE_CHECKING:  # evolve pulls in the openai client: imported only when a recipe has evolve blocks
    from mixer.benchmark_sets import ResolvedBenchmark
    from mixer.decontam import Decontamination
    from mixer.evolve.engine import EvolveResult


# sources staged at once. Two kept ~1.6 of the 2 cores busy all through staging, though the GIL is held little
# of it; with three ~1.75, and the 1M benchmark builds 4-6% faster, for ~70 MB more peak at 10M rows and ~90 MB
# more in a cold `mixer plan` (benchmarks/HISTORY.md, "Nineteenth session")
LOAD_WORKERS = 3
MEGABYTE = 1e6


def prepare_decontam(recipe: Recipe, benchmarks: list[ResolvedBenchmark], options: Options) -> Decontamination | None:
    if recipe.mixture.decontaminate is None:
        return None
    from mixer.decontam import Decontamination

    return Decontamination(recipe.mixture.decontaminate, benchmarks, options.cache)


class Cleaner:
    """Stages sources and settles them in recipe order: decontamination, then exact dedup against everything
    settled before (earlier sources win), then, over all of them, near dedup."""

    def __init__(
        self,
        recipe: Recipe,
        folder: Path | None,
        decontam: Decontamination | None,
        near_audit: bool = False,
        scratch: Path | None = None,
        hash_prompts: bool = False,
    ) -> None:
        """`folder` holds the staged rows; None when only counts are wanted (`mixer plan` without evolve).
        Near dedup and the near-overlap audit (`near_audit`) keep prompt n-grams under `scratch` (or `folder`).
        `hash_prompts`: each row's prompt hash while staging, for an overlap matrix of every available row (`mixer
        decontam`; a build hashes its selected rows' alone, while filling its sort buckets)."""
        self.recipe = recipe
        self.hash_prompts = hash_prompts
        self.folder = folder
        self.decontam = decontam
        self.dedup = Deduplicator() if recipe.mixture.dedup in ("exact", "near") else None
        self.grams = None
        if near_audit or recipe.mixture.dedup == "near":
            from mixer.gram_store import GramStore

            where = scratch if scratch is not None else folder
            if where is None:
                raise ValueError("near-duplicate search needs a folder for its n-grams")
            self.grams = GramStore(where / "grams")
        self.staged: list[Staged] = []
        self.stopped = threading.Event()  # set on Ctrl-C or an error: loading threads stop at their next chunk

    def stage(self, source: ResolvedSource, chunks: Iterable[Pool]) -> Staged:
        """The heavy part (convert, hash, find benchmark hits, write): safe to run for several sources at once."""
        tag = source.spec.name.encode("utf-8").hex()  # a file name whatever the source is called
        drop_patterns = self.recipe.mixture.drop_patterns
        known = self.decontam.known_hits(source, drop_patterns) if self.decontam is not None else None
        staged = stage_chunks(
            source,
            self._until_stopped(chunks),
            self.folder,
            tag,
            grams=self.grams,
            dedup=self.dedup is not None,
            index=self.decontam.index if self.decontam is not None and known is None else None,
            known_hits=known,
            hash_prompts=self.hash_prompts,
        )
        for input_file in source.files:  # before anything is cached under its hash
            input_file.check_unchanged()
        if self.decontam is not None and known is None:
            self.decontam.remember_hits(source, drop_patterns, staged.hits)
        return staged

    def _until_stopped(self, chunks: Iterable[Pool]) -> Iterator[Pool]:
        """`chunks` until the build stops; checked before reading each chunk as well as after, so a stopping
        build does not parse and convert one more chunk per thread."""
        iterator = iter(chunks)
        while not self.stopped.is_set():
            chunk = next(iterator, None)
            if chunk is None:
                return
            if self.stopped.is_set():
                break
            yield chunk
        raise MixerError("stopped")  # the build is already failing: this only frees the thread

    def settle(self, staged: Staged) -> Staged:
        if self.decontam is not None:
            self.decontam.settle(staged)
        if self.dedup is not None:
            self.dedup.drop_seen(staged, remember=not self._adds_no_rows(staged.name))
        staged.keys = staged.keys.drop("h1", "h2", strict=False)
        self.staged.append(staged)
        return staged

    def near_dedup(self, progress: Progress | None = None) -> None:
        """Near dedup over everything settled so far (earlier rows win, so rerunning it only drops new rows)."""
        if self.recipe.mixture.dedup == "near":
            silent = frozenset(i for i, s in enumerate(self.staged) if self._adds_no_rows(s.name))
            near_dedup(self.staged, self.near_pairs(progress), silent)

    def _adds_no_rows(self, name: str) -> bool:
        """A `take: 0` source: its rows are not in the mixture, so they take none from other sources by dedup."""
        return self.recipe.source(name).selector.takes_nothing

    def near_pairs(self, progress: Progress | None = None) -> pl.DataFrame:
        """(row, row_b) labels (`gram_store.label`, sources in settling order) of near-duplicate available rows."""
        assert self.grams is not None, "built without near_audit or dedup: near"
        return self.grams.near_pairs([(s.name, s.keys) for s in self.staged], progress=progress)


def stage_sources(recipe: Recipe, resolved: list[ResolvedSource], progress: Progress, cleaner: Cleaner) -> list[Staged]:
    """Load and stage every file-backed source, LOAD_WORKERS at a time (polars releases the GIL, and one file
    rarely keeps both cores busy); settle each in recipe order as soon as it and the ones before it are staged."""
    megabytes = {source.spec.name: sum(f.bytes for f in source.files) / MEGABYTE for source in resolved}
    task = progress.add_task("reading inputs (MB)", total=sum(megabytes.values()))
    unfinished = len(resolved)  # sources loading or waiting to: once fewer than the workers, each reads ahead
    finishing = threading.Lock()

    def core_to_spare() -> bool:
        return unfinished < LOAD_WORKERS

    def load(source: ResolvedSource) -> Staged:
        nonlocal unfinished
        heard = 0.0

        def on_read(size: int) -> None:
            nonlocal heard
            heard += size / MEGABYTE
            progress.advance(task, size / MEGABYTE)

        try:
            chunks = load_chunks(source, recipe.mixture.drop_patterns, on_read=on_read, read_ahead=core_to_spare)
            staged = cleaner.stage(source, chunks)
        finally:
            with finishing:
                unfinished -= 1
        progress.advance(task, max(0.0, megabytes[source.spec.name] - heard))  # whatever went unheard
        return staged

    # largest inputs first, so the last source to finish is a small one and both threads stay busy to the
    # end; settled in recipe order all the same (dedup gives earlier sources priority)
    by_size = sorted(resolved, key=lambda s: -sum(f.bytes for f in s.files))
    with ThreadPoolExecutor(max_workers=LOAD_WORKERS) as workers:
        try:
            futures = {source.spec.name: workers.submit(load, source) for source in by_size}
            staged = [cleaner.settle(wait_for(futures[source.spec.name])) for source in resolved]
        except BaseException:  # Ctrl-C or a bad source: do not wait for the other sources to finish loading
            cleaner.stopped.set()
            workers.shutdown(wait=True, cancel_futures=True)
            raise
    release_freed_memory()  # what the staging threads freed would otherwise sit under the rest of the build
    cleaner.near_dedup(progress)
    return staged


def needed_blocks(recipe: Recipe) -> list[EvolveSpec]:
    """Blocks some source mixes in, in recipe order."""
    used = {s.evolved for s in recipe.sources if s.evolved}
    return [b for b in recipe.evolve if b.name in used]


def evolve_seeds(recipe: Recipe, pools: list[Staged], blocks: list[EvolveSpec]) -> dict[str, pl.DataFrame]:
    from mixer.evolve.pools import seed_rows

    by_name = {p.name: p for p in pools}
    return {b.name: seed_rows(by_name[b.source], b, recipe.seed) for b in blocks}


def evolve_cache_path(options: Options) -> Path:
    return options.cache / "evolve.sqlite"


def run_evolve(
    recipe: Recipe, pools: list[Staged], blocks: list[EvolveSpec], options: Options, progress: Progress
) -> dict[str, EvolveResult]:
    if not blocks:
        return {}
    from mixer.evolve.engine import run_block
    from mixer.evolve.progress import evolve_reporter

    seeds = evolve_seeds(recipe, pools, blocks)
    return {
        block.name: run_block(
            block,
            seeds[block.name],
            seed=recipe.seed,
            cache_path=evolve_cache_path(options),
            report=evolve_reporter(progress, block),
        )
        for block in blocks
    }


def evolved_pools(recipe: Recipe, pools: list[Staged], results: dict[str, EvolveResult]) -> list[Pool]:
    from mixer.evolve.pools import evolved_pool

    licenses = {p.name: p.source.license for p in pools}
    made = []
    for spec in recipe.sources:
        if spec.evolved:
            block = recipe.block(spec.evolved)
            license = f"{licenses[block.source]}; generated by {block.teacher.model} (check its terms of use)"
            made.append(evolved_pool(spec, results[spec.evolved], recipe, license))
    return made


def counts_key(
    recipe: Recipe, resolved: list[ResolvedSource], benchmarks: list[ResolvedBenchmark], options: Options
) -> str:
    return counts_cache.counts_key(recipe, resolved, options.sample, auxiliary_inputs(recipe, benchmarks))


def check_filter_patterns(recipe: Recipe) -> None:
    """The drop patterns checked against polars' regex engine, before any row is read (see
    `validate.filter_pattern_problems`; `load_recipe` stays free of polars for the no-op check)."""
    if recipe.located is not None and (problems := filter_pattern_problems(recipe.located)):
        raise RecipeInvalid(problems)


def load_rows_recipe(recipe_path: Path, command: str | None = None) -> Recipe:
    """`load_recipe` for a command that reads rows: with its drop patterns checked against the row filter. A
    `command` about the mixture (plan, decontam, evolve) refuses a recipe that has none."""
    recipe = load_mixture_recipe(recipe_path, command) if command else load_recipe(recipe_path)
    check_filter_patterns(recipe)
    return recipe


def plan_recipe(recipe_path: Path, options: Options) -> tuple[Recipe, Plan]:
    """Plan without any teacher call: evolve blocks are shown as estimates (upper bounds). Per-source counts
    come from the counts cache when only selectors changed since the data was last read."""
    recipe = load_rows_recipe(recipe_path, "plan")
    resolved = resolve_inputs(recipe, options)
    refuse_inputs_in_output(resolved, output_dir(recipe))  # as the build will: a plan of it is no plan
    benchmarks = resolve_benchmark_inputs(recipe, options)
    fingerprint_in = input_fingerprint(resolved)
    key = counts_key(recipe, resolved, benchmarks, options) if counts_cache.cacheable(recipe) else None
    if key is not None and (summaries := counts_cache.load(options.cache, key, resolved)) is not None:
        return recipe, make_plan(recipe, summaries, sample=options.sample, input_fingerprint=fingerprint_in)
    blocks = needed_blocks(recipe)
    if not blocks:  # counts only: no rows are kept anywhere (near dedup's n-grams, in a scratch dir)
        with make_progress(options.progress) as progress, scratch_dir("mixer-plan-") as scratch:
            cleaner = Cleaner(recipe, None, prepare_decontam(recipe, benchmarks, options), scratch=scratch)
            summaries = [summarize(p) for p in stage_sources(recipe, resolved, progress, cleaner)]
        if key is not None:
            counts_cache.save(options.cache, key, summaries)
        return recipe, make_plan(recipe, summaries, sample=options.sample, input_fingerprint=fingerprint_in)
    with make_progress(options.progress) as progress, scratch_dir("mixer-plan-") as folder:
        cleaner = Cleaner(recipe, folder, prepare_decontam(recipe, benchmarks, options))
        pools = stage_sources(recipe, resolved, progress, cleaner)
        summaries = [summarize(p) for p in pools]
        if key is not None:
            counts_cache.save(options.cache, key, summaries)
        seeds = evolve_seeds(recipe, pools, blocks)
    from mixer.evolve.pools import as_estimate, estimate

    infos = {b.name: estimate(b, seeds[b.name]) for b in blocks}
    licenses = {p.name: p.source.license for p in pools}
    estimates = {
        s.name: as_estimate(infos[s.evolved], licenses[recipe.block(s.evolved).source])
        for s in recipe.sources
        if s.evolved
    }
    plan = make_plan(
        recipe,
        summaries,
        sample=options.sample,
        input_fingerprint=fingerprint_in,
        estimates=estimates,
        evolve=tuple(infos.values()),
    )
    return recipe, plan


def manifest_for(
    recipe: Recipe,
    plan: Plan,
    build_fp: str,
    shards: list[dict],
    written: dict[str, int],
    pools: list[Staged],
    copied: dict[str, int],
) -> dict[str, Any]:
    """`copied`: per source, test rows that are copies of training rows (`held_out_copies_of_training_rows`)."""
    return {
        "mixer_version": __version__,
        "recipe": {"name": recipe.name, "path": str(recipe.path), "git": git_info(recipe.path)},
        # `${VAR}`s filled, credentials in URLs hidden; the stages are the runs' to record (run.json)
        "resolved_recipe": redacted(recipe.mixture_document),
        "seed": recipe.seed,
        "sample": plan.sample,
        "plan_fingerprint": plan.fingerprint,
        "build_fingerprint": build_fp,
        "totals": {
            "rows": plan.total_rows,
            "est_tokens": plan.est_tokens,
            "shards": len(shards),
            **({"eval_rows": plan.eval_rows} if plan.eval_rows else {}),  # the last rows, in the test split
            # test rows whose twin (another copy of an upsampled row) trains: their loss is not held out
            **({"eval_copies_of_train_rows": copied} if copied else {}),
        },
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


def write_rejects(folder: Path, pools: list[Staged], results: dict[str, EvolveResult]) -> None:
    """Quarantined input rows per source, eliminated evolutions per block (each with its reason)."""
    quarantined = [p for p in pools if p.rejects is not None]
    eliminated = [r for r in results.values() if r.rejects.height]
    if not quarantined and not eliminated:
        return
    folder.mkdir()
    for pool in quarantined:
        pool.rejects.write_ndjson(folder / f"{pool.name}.jsonl")
    for result in eliminated:
        result.rejects.write_ndjson(folder / f"evolve-{result.block}.jsonl")


def evolve_manifest(block: EvolveSpec, result: EvolveResult) -> dict[str, Any]:
    """Stats plus the endpoints (model, base URL: never a key)."""
    return {
        "from": block.source,
        "teacher": {
            "model": block.teacher.model,
            "base_url": redacted(block.teacher.base_url),
            "reasoning": block.teacher.reasoning,
        },
        "judge": {"model": block.judge.model, "base_url": redacted(block.judge.base_url)},
        "operators": [op.name for op in block.operators],
        "eliminate": list(block.eliminate),
        "keep": block.keep,
        **result.stats(),
    }


def prompt_reader(pools: list[Staged]) -> Callable[[str, pl.Series], list[str]]:
    """Read normalised first prompts back from staged rows, for the overlap report's examples."""
    by_name = {p.name: p for p in pools}

    def read(source: str, positions: pl.Series) -> list[str]:
        rows = by_name[source].rows_at(positions)
        return rows.select(first_prompt(rows)).to_series().to_list()

    return read


def materialise(
    recipe: Recipe,
    resolved: list[ResolvedSource],
    benchmarks: list[ResolvedBenchmark],
    options: Options,
    out_dir: Path,
    build_fp: str,
) -> tuple[Plan, dict[str, Any]]:
    """Everything a build does once it is not a no-op: stage, evolve, plan, select, write; atomically."""
    check_filter_patterns(recipe)
    # the tokenizer for the statistics is read first: a broken one is better said before the inputs are read
    tokenizer = recipe.base_dir / recipe.output.tokenizer if recipe.output.tokenizer else None
    loaded = load_tokenizer(tokenizer) if tokenizer is not None else None
    with make_progress(options.progress) as progress, atomic_dir(out_dir, BUILD_FILES) as temp:
        staging = temp / ".staging"  # rows between loading and writing; removed before the rename
        decontam = prepare_decontam(recipe, benchmarks, options)
        cleaner = Cleaner(recipe, staging, decontam)
        pools = stage_sources(recipe, resolved, progress, cleaner)
        results = run_evolve(recipe, pools, needed_blocks(recipe), options, progress)
        if results:
            for pool in evolved_pools(recipe, pools, results):
                cleaner.settle(cleaner.stage(pool.source, [pool]))  # evolved rows lose to every file-backed row
            cleaner.near_dedup(progress)
            by_name = {p.name: p for p in cleaner.staged}
            pools = [by_name[s.name] for s in recipe.sources]
        summaries = [summarize(p) for p in pools]
        if counts_cache.cacheable(recipe):  # a later `mixer plan` with other takes or weights is instant
            counts_cache.save(options.cache, counts_key(recipe, resolved, benchmarks, options), summaries)
        plan = make_plan(recipe, summaries, sample=options.sample, input_fingerprint=input_fingerprint(resolved))
        selections = select(pools, {s.name: s.selected for s in plan.sources}, recipe.seed, recipe.mixture.shuffle)
        written = {s.staged.name: s.rows.height for s in selections if s.rows.height}
        copied = held_out_copies_of_training_rows(selections, plan.eval_rows)
        sorting = progress.add_task("sorting rows into buckets", total=plan.total_rows)
        buckets = fill_buckets(
            selections, staging / "buckets", recipe.mixture.shuffle, lambda rows: progress.advance(sorting, rows)
        )
        overlap = overlap_matrix(buckets.prompts, buckets.prompt_text)
        features: list[pl.DataFrame] = []
        task = progress.add_task("writing shards", total=plan.total_rows)

        def measure(frame: pl.DataFrame) -> None:
            features.append(row_features(frame, loaded))
            progress.advance(task, frame.height)

        ordered = shards(buckets, recipe.output.shard_rows, eval_rows=plan.eval_rows)
        written_shards = write_shards(ordered, temp / "data", measure)
        shutil.rmtree(staging, ignore_errors=True)
        write_rejects(temp / "rejects", pools, results)
        manifest = manifest_for(recipe, plan, build_fp, written_shards, written, pools, copied)
        if results:
            manifest["evolve"] = {name: evolve_manifest(recipe.block(name), r) for name, r in results.items()}
        if decontam is not None:
            manifest["decontamination"] = decontam.report([p.counts for p in pools])
        manifest["overlap"] = overlap
        manifest["stats"] = write_stats(temp, pl.concat(features), manifest, tokens_method(tokenizer))
        write_json(temp / "manifest.json", manifest)
        (temp / "README.md").write_text(dataset_card(plan, manifest, recipe.description), encoding="utf-8")
    return plan, manifest


def evolve_only(
    recipe_path: Path, options: Options, *, block: str | None = None, out: Path | None = None
) -> tuple[Path, dict[str, dict[str, Any]]]:
    """`mixer evolve`: run evolve blocks (all, or one) without mixing; each block's rows, rejects and stats
    go to OUT/<block>/ atomically. A later `mixer build` reuses every call from the cache."""
    recipe = load_rows_recipe(recipe_path, "evolve from")
    if block is not None and block not in {b.name for b in recipe.evolve}:
        from mixer.key_hints import did_you_mean

        raise MixerError(
            f"{recipe_path}: no evolve block {block!r}",
            did_you_mean(block, [b.name for b in recipe.evolve])
            or "blocks: " + ", ".join(b.name for b in recipe.evolve),
        )
    blocks = [recipe.block(block)] if block else list(recipe.evolve)
    if not blocks:
        raise MixerError(f"{recipe_path}: the recipe has no evolve: blocks")
    resolved = resolve_inputs(recipe, options)
    benchmarks = resolve_benchmark_inputs(recipe, options)
    out_root = out or Path(f"{output_dir(recipe)}.evolve")
    with make_progress(options.progress) as progress, scratch_dir("mixer-evolve-") as folder:
        cleaner = Cleaner(recipe, folder, prepare_decontam(recipe, benchmarks, options))
        pools = stage_sources(recipe, resolved, progress, cleaner)
        results = run_evolve(recipe, pools, blocks, options, progress)
    stats = {name: evolve_manifest(recipe.block(name), result) for name, result in results.items()}
    for name, result in results.items():
        with atomic_dir(out_root / name, EVOLVE_FILES) as temp:
            result.rows.write_parquet(temp / "data.parquet")
            result.rejects.write_ndjson(temp / "rejects.jsonl")
            write_json(temp / "stats.json", stats[name])
    return out_root, stats


def decontam_only(recipe_path: Path, options: Options) -> dict[str, Any]:
    """`mixer decontam`: the data-quality audit without a build. Benchmark hits (report mode, when the recipe
    has mixture.decontaminate) and exact + near-duplicate overlap over every available row; nothing is written.

    The rows are those before the recipe's dedup: `dedup: near` would remove every near pair the audit is
    there to show (its near matrix was all zeros while the build dropped thousands of rows as copies)."""
    recipe = load_rows_recipe(recipe_path, "audit")
    recipe = replace(recipe, mixture=replace(recipe.mixture, dedup="none"))
    resolved = resolve_inputs(recipe, options)
    decontam = None
    if recipe.mixture.decontaminate is not None:
        from mixer.decontam import Decontamination

        spec = replace(recipe.mixture.decontaminate, mode="report")
        decontam = Decontamination(spec, resolve_benchmark_inputs(recipe, options), options.cache)
    with make_progress(options.progress) as progress, scratch_dir("mixer-audit-") as folder:
        cleaner = Cleaner(recipe, folder, decontam, near_audit=True, hash_prompts=True)
        pools = stage_sources(recipe, resolved, progress, cleaner)
        near = cleaner.near_pairs(progress)
        overlap = overlap_matrix({p.name: p.keys for p in pools}, prompt_reader(pools), near=near)
    return {
        "decontamination": decontam.report([p.counts for p in pools]) if decontam is not None else None,
        "overlap": overlap,
    }
