"""Plan: how many rows each source contributes, decided from the recipe and the loaded pools.

The Plan is plain data. `mixer plan` prints it; `build` executes it; its fingerprint, with the input hashes,
decides whether a rebuild is a no-op.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from mixer import __version__
from mixer.errors import Diagnostic, RecipeInvalid
from mixer.hashing import fingerprint
from mixer.mix import upsample_count
from mixer.recipe import Recipe, Selector, SourceSpec
from mixer.resolve import ResolvedSource
from mixer.stage import Staged

if TYPE_CHECKING:
    from pathlib import Path


@dataclass(frozen=True)
class PlannedSource:
    name: str
    format: str
    origin: str
    registry: str | None
    revision: str | None
    license: str
    selector: str
    files: tuple[dict, ...]
    counts: dict[str, int]  # read, malformed, each filter's removals, dedup
    available: int
    selected: int
    upsample: float
    est_tokens: int


@dataclass(frozen=True)
class Plan:
    recipe: str
    recipe_path: str
    seed: int
    sample: bool
    shuffle: bool
    dedup: str
    output_dir: str
    shard_rows: int
    sources: tuple[PlannedSource, ...]
    total_rows: int
    est_tokens: int
    fingerprint: str
    evolve: tuple[dict, ...] = ()  # cost estimates of evolve blocks, before any call
    eval_rows: int = 0  # of `total_rows`, the last of the shuffled order, written as the `test` split

    def to_json(self) -> dict:
        return asdict(self)


def _weighted_total(weights: list[float], total: int) -> int:
    """The rows weights give in all, to the nearest row: what a build makes and what the shortfall note says.
    The epsilon rounds up a half that floating point lands a hair under (0.08 and 0.47 of 10 rows: 5.4999…)."""
    return math.floor(sum(weight * total for weight in weights) + 1e-9 + 0.5)


def _weighted_counts(specs: list[SourceSpec], total: int) -> dict[str, int]:
    """Largest-remainder rounding, so weights that sum to 1 give exactly `total` rows."""
    exact = {s.name: float(s.selector.value) * total for s in specs}
    target = _weighted_total([float(s.selector.value) for s in specs], total)
    counts = {name: math.floor(v + 1e-9) for name, v in exact.items()}
    by_remainder = sorted(exact, key=lambda n: (-(exact[n] - counts[n]), n))
    for name in by_remainder[: max(0, target - sum(counts.values()))]:
        counts[name] += 1
    return counts


def weights_short_of_total(document: dict) -> str | None:
    """Weights are shares of `mixture.total` and may add up to less than 1. When every source is weighted,
    a sum under 1 is more often proportions meant to fill the total: say what the recipe asks for."""
    sources = document.get("sources") or {}
    total = (document.get("mixture") or {}).get("total")
    if not total or not sources or not all(isinstance(s, dict) and "weight" in s for s in sources.values()):
        return None
    weights = [float(s["weight"]) for s in sources.values()]
    share = sum(weights)
    if share >= 1 - 1e-9:
        return None
    return (
        f"the weights add up to {share:g}, so the mixture is {share:.0%} of mixture.total "
        f"({_weighted_total(weights, total):,} of {total:,} rows); weights that add up to 1 fill it"
    )


def total_is_not_the_mixture(document: dict, rows: int) -> str | None:
    """`mixture.total` is what the weighted sources share; `take` and `fraction` sources add their own rows. A
    recipe that sets it beside them, or without any weight, gets a mixture of another size than the number
    it wrote: say so, with the numbers."""
    sources = [s for s in (document.get("sources") or {}).values() if isinstance(s, dict)]
    total = (document.get("mixture") or {}).get("total")
    if not total or not sources:
        return None
    weighted = sum(1 for s in sources if "weight" in s)
    if weighted == 0:
        return f"mixture.total ({total:,}) is not used: it is what sources with a `weight` share, and none has one"
    if weighted == len(sources) or rows == total:
        return None
    return (
        f"mixture.total ({total:,}) is what the {weighted} weighted source(s) share; the {len(sources) - weighted} "
        f"with take or fraction add their own rows, so the mixture has {rows:,}"
    )


def _three_digits(value: float) -> str:
    """Three significant digits without an exponent, to paste into YAML: 1.5e+03 is 1500."""
    return format(Decimal(f"{value:.3g}"), "f")


def rows_text(n: int) -> str:
    return f"{n:,} row" + ("" if n == 1 else "s")


def removed_steps(counts: dict[str, int]) -> dict[str, int]:
    """The steps that took a source's rows before selection (malformed, filters, decontaminate, dedup), and how
    many each took."""
    return {step: n for step, n in counts.items() if step != "read" and n}


def removal_text(counts: dict[str, int]) -> str | None:
    """`read 1,319, decontaminate −1,319`, as the dataset card and a too-few-rows error write it; None when no
    step removed a row."""
    removed = removed_steps(counts)
    if not removed:
        return None
    return f"read {counts.get('read', 0):,}" + "".join(f", {step} −{n:,}" for step, n in removed.items())


def dedup_took_text(counts: dict[str, int], recipe_path: str | Path) -> str | None:
    """Where rows that dedup took went: the count alone ("dedup_near −7,469") sent users looking for a bug, when
    another source listed earlier held the same rows (FLAN CoT's GSM8K and GSM8K itself)."""
    if not (counts.get("dedup") or counts.get("dedup_near")):
        return None
    return (
        "dedup keeps each copy in the source listed first (or the first copy in its own file); "
        f"`mixer decontam {recipe_path}` shows which sources share its rows"
    )


def _too_few_hint(selector: Selector, n: int, have: int, counts: dict[str, int], recipe_path: str | Path) -> str:
    """What to write instead, with the numbers: a user who asked for more rows than a source has either wants
    fewer or wants its rows repeated."""
    if selector.mode == "weight":
        most = math.floor(float(selector.value) * have / n * 1000) / 1000
        fewer = f"a weight of at most {most:g} (or a smaller mixture.total)"
    else:
        fewer = f"take: all (its {rows_text(have)}) or a smaller take"
    hint = (
        f"use {fewer}, or loosen what removed its rows"
        if have == 0
        else f"use {fewer}, or fraction: {_three_digits(n / have)} to repeat its rows (about {n:,})"
    )
    return hint + (f"; {took}" if (took := dedup_took_text(counts, recipe_path)) else "")


def selector_count(selector: Selector, available: int) -> int:
    """Rows for take / all / fraction (weights need the whole recipe: see `requested_counts`)."""
    if selector.mode == "take":
        return int(selector.value)
    if selector.mode == "all":
        return available
    if selector.mode == "fraction":
        return upsample_count(available, float(selector.value))
    raise ValueError("a weight is a share of mixture.total")


def requested_counts(recipe: Recipe, available: dict[str, int], sample: bool) -> dict[str, int]:
    """Rows per source before availability checks. In sample mode, takes and weights are scaled down together
    so the bundled samples keep the recipe's proportions."""
    counts: dict[str, int] = {}
    weighted = [s for s in recipe.sources if s.selector.mode == "weight"]
    if weighted:
        counts.update(_weighted_counts(weighted, recipe.mixture.total or 0))
    for spec in recipe.sources:
        if spec.selector.mode != "weight":
            counts[spec.name] = selector_count(spec.selector, available[spec.name])
    if sample:
        # the scale comes from file-backed sources only, so evolve seeds do not depend on evolve results
        fixed = [s.name for s in recipe.sources if s.selector.mode in ("take", "weight") and counts[s.name] > 0]
        scale = min([available[n] / counts[n] for n in fixed if recipe.source(n).evolved is None] + [1.0])
        for name in fixed:
            counts[name] = max(1, min(available[name], math.floor(counts[name] * scale + 0.5)))
    return counts


@dataclass(frozen=True)
class Estimate:
    """Stand-in for a pool that does not exist yet (an evolve block's output before any call)."""

    available: int  # upper bound: every evolution survives
    est_tokens_per_row: float
    license: str


@dataclass(frozen=True)
class PoolSummary:
    """What planning needs of a loaded source: where it came from, how many rows survive its filters and
    dedup, and their characters (for token estimates). Small enough to cache between `mixer plan` runs."""

    source: ResolvedSource
    available: int
    chars: int
    counts: dict[str, int]


def summarize(staged: Staged) -> PoolSummary:
    return PoolSummary(staged.source, staged.available, staged.chars, dict(staged.counts))


def _estimated_source(spec: SourceSpec, estimate: Estimate, n: int) -> PlannedSource:
    return PlannedSource(
        name=spec.name,
        format="messages",
        origin="evolve (estimate)",
        registry=None,
        revision=None,
        license=estimate.license,
        selector=spec.selector.describe(),
        files=(),
        counts={},
        available=estimate.available,
        selected=min(n, estimate.available),
        upsample=round(n / estimate.available, 4) if estimate.available else 0.0,
        est_tokens=round(estimate.est_tokens_per_row * min(n, estimate.available)),
    )


def make_plan(
    recipe: Recipe,
    pools: list[PoolSummary],
    *,
    sample: bool,
    input_fingerprint: str,
    estimates: dict[str, Estimate] | None = None,
    evolve: tuple[dict, ...] = (),
) -> Plan:
    """`pools` in recipe order; sources without a pool (evolve outputs in `mixer plan`) need an estimate."""
    estimates = estimates or {}
    by_name = {p.source.spec.name: p for p in pools}
    available = {n: p.available for n, p in by_name.items()} | {n: e.available for n, e in estimates.items()}
    counts = requested_counts(recipe, available, sample)
    problems: list[Diagnostic] = []
    planned = []
    for spec in recipe.sources:
        if spec.name not in by_name:
            planned.append(_estimated_source(spec, estimates[spec.name], counts[spec.name]))
            continue
        pool = by_name[spec.name]
        src = pool.source
        n, have = counts[spec.name], available[spec.name]
        if spec.selector.mode in ("take", "weight") and n > have:
            where = ("sources", spec.name, spec.selector.mode)
            problems.append(
                recipe.located.diag(
                    where,
                    f"{spec.name} asks for {rows_text(n)} but only {have:,} {'is' if have == 1 else 'are'} available"
                    # what removed rows, named: "after filters" sent a user whose rows went to decontamination
                    + (f": {removed}" if (removed := removal_text(pool.counts)) else ""),
                    _too_few_hint(spec.selector, n, have, pool.counts, recipe.path),
                )
                if recipe.located
                else Diagnostic(str(recipe.path), 1, 1, f"{spec.name}: {n} > {have} available")
            )
        chars = pool.chars
        est_tokens = round(chars / 4 * (n / have)) if have else 0
        planned.append(
            PlannedSource(
                name=spec.name,
                format=src.format,
                origin=src.origin,
                registry=spec.registry,
                revision=src.revision,
                license=src.license,
                selector=spec.selector.describe(),
                files=tuple(f.to_json() for f in src.files),
                counts=dict(pool.counts),
                available=have,
                selected=n,
                upsample=round(n / have, 4) if have else 0.0,
                est_tokens=est_tokens,
            )
        )
    total = sum(p.selected for p in planned)
    eval_rows = recipe.mixture.eval.count(total)
    if sample and recipe.mixture.eval.rows:  # held-out rows shrink with the takes, as the samples are small
        full = sum(requested_counts(recipe, available, False).values())
        eval_rows = min(eval_rows, max(1, math.floor(eval_rows * total / full + 0.5))) if full else 0
    if eval_rows and eval_rows >= total:
        problems.append(
            recipe.located.diag(
                ("mixture", "eval"),
                f"eval holds out {rows_text(eval_rows)} of a mixture of {rows_text(total)}, which leaves none to "
                "train on",
                "hold out fewer rows (eval: {rows: N} below the mixture's size, or a fraction under 1)",
            )
            if recipe.located
            else Diagnostic(str(recipe.path), 1, 1, f"eval {eval_rows} >= {total} rows")
        )
    if problems:
        raise RecipeInvalid(problems)
    body = {
        "tool": __version__,
        "recipe": recipe.mixture_document,
        "sample": sample,
        "inputs": input_fingerprint,
        "counts": {p.name: p.selected for p in planned},
    }
    return Plan(
        recipe=recipe.name,
        recipe_path=str(recipe.path),
        seed=recipe.seed,
        sample=sample,
        shuffle=recipe.mixture.shuffle,
        dedup=recipe.mixture.dedup,
        output_dir=recipe.output.dir,
        shard_rows=recipe.output.shard_rows,
        sources=tuple(planned),
        total_rows=total,
        est_tokens=sum(p.est_tokens for p in planned),
        fingerprint=fingerprint(body),
        evolve=evolve,
        eval_rows=eval_rows,
    )
