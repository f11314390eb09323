"""Live display of an evolve block: rows done and eliminated, calls/s, tokens, dollars against the budget."""

from __future__ import annotations

import time

from rich.progress import Progress, TaskID

from mixer.evolve.cost import Meter
from mixer.evolve.engine import Report, RoundStats
from mixer.recipe import EvolveSpec


def evolve_reporter(progress: Progress, block: EvolveSpec, seeds: int) -> Report:
    started = time.monotonic()
    tasks: dict[int, TaskID] = {}
    budget = f" / ${block.budget_usd:g}" if block.budget_usd is not None else ""

    def report(stats: RoundStats, meter: Meter, done: int) -> None:
        if stats.round not in tasks:
            tasks[stats.round] = progress.add_task("", total=stats.input)
        elapsed = max(time.monotonic() - started, 1e-9)
        progress.update(
            tasks[stats.round],
            completed=done,
            description=(
                f"evolve {block.name} round {stats.round}/{block.rounds} · {sum(stats.eliminated.values())} "
                f"eliminated · {meter.calls / elapsed:.1f} calls/s · {meter.tokens:,} tokens · ${meter.usd:.4f}{budget}"
            ),
        )

    return report
