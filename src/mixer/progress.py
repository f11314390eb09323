"""Rich progress for long steps; silent when stderr is not a terminal (CI logs, --json)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def make_progress(enabled: bool = True) -> Progress:
    console = Console(stderr=True)
    return Progress(
        # not markup: a description holds names and a teacher's error text, which may hold `[...]`
        TextColumn("{task.description}", markup=False, style="bold"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not (enabled and console.is_terminal),
    )
