"""The command line's own text: --help of every command."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from mixer.cli import app


def _help_pages() -> dict[str, str]:
    runner = CliRunner()
    group = typer.main.get_command(app)
    paths = [[]] + [[name] for name in group.commands]
    paths += [["results", name] for name in group.commands["results"].commands]
    pages = {}
    for path in paths:
        done = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "120"})
        assert done.exit_code == 0, done.output
        pages[" ".join(path) or "mixer"] = done.output
    return pages


def test_help_shows_value_types_for_options_that_take_values_and_none_for_flags():
    pages = _help_pages()
    assert len(pages) == 14 and "results add" in pages
    for name, page in pages.items():
        assert "<bool>" not in page, name
        assert "--help " in page, name
    build = {line.split()[1]: line for line in pages["build"].splitlines() if line.startswith("│ --")}
    assert "<path>" in build["--out"] and "<path>" in build["--data-dir"]
    assert build["--force"].split()[2] == "Rebuild"  # the help text comes straight after the flag
