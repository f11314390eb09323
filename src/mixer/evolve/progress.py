"""What a running evolve block shows: rows done and eliminated, calls/s, tokens, dollars against the budget, and
the failure being retried while the teacher fails.

In a terminal it is the live progress line. Where stderr is no terminal (a log file, `nohup`, a Slurm job) the
same line is printed every LOG_EVERY_SECONDS, at each round's end and when calls start failing: an hours-long
block would otherwise leave its log empty until it ends, alive or hung, spending or not.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from rich.progress import Progress, TaskID

from mixer.evolve.cost import Meter, dollars
from mixer.evolve.engine import Report, RoundStats
from mixer.recipe import EvolveSpec

LOG_EVERY_SECONDS = 30.0
LIVE_FAILURE_CHARS = 60  # a server's error can be a page of HTML; the log line keeps it whole


def evolve_reporter(
    progress: Progress,
    block: EvolveSpec,
    log: TextIO | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Report:
    started = clock()
    tasks: dict[int, TaskID] = {}
    budget = f" / ${dollars(block.budget_usd)}" if block.budget_usd is not None else ""
    printed_at, printed_retrying = started, False  # the last log line: when, and whether calls were failing

    def describe(stats: RoundStats, meter: Meter, failure_chars: int | None) -> str:
        elapsed = max(clock() - started, 1e-9)
        # a resumed block answers from the cache first, at "0.0 calls/s": the count shows it is not stuck
        cached = f" · {meter.cached:,} from the cache" if meter.cached else ""
        text = (
            f"evolve {block.name} round {stats.round}/{block.rounds} · {sum(stats.eliminated.values())} "
            f"eliminated · {meter.calls / elapsed:.1f} calls/s{cached} · {meter.tokens:,} tokens · "
            f"${meter.usd:.4f}{budget}"
        )
        if meter.retries:
            text += f" · {meter.retries:,} {'retry' if meter.retries == 1 else 'retries'}"
        if stats.retrying:
            failure = stats.retrying
            if failure_chars is not None and len(failure) > failure_chars:
                failure = failure[: failure_chars - 1] + "…"
            text += f" (retrying: {failure})"
        return text

    def live(stats: RoundStats, meter: Meter, done: int) -> None:
        if stats.round not in tasks:
            tasks[stats.round] = progress.add_task("", total=stats.input)
        progress.update(tasks[stats.round], completed=done, description=describe(stats, meter, LIVE_FAILURE_CHARS))

    def logged(stats: RoundStats, meter: Meter, done: int) -> None:
        nonlocal printed_at, printed_retrying
        now = clock()
        retrying = stats.retrying is not None
        due = (
            done == stats.input  # the round's end
            or now - printed_at >= LOG_EVERY_SECONDS
            or (retrying and not printed_retrying)  # calls started failing
        )
        if due:
            printed_at, printed_retrying = now, retrying
            print(f"{describe(stats, meter, None)} · {done:,}/{stats.input:,} rows", file=log or sys.stderr, flush=True)

    return logged if progress.disable else live
