"""The command line's own text: --help of every command, and the errors no step of a command words itself."""

from __future__ import annotations

import hashlib
import json
import signal
import sys

import pytest
import typer
from typer.testing import CliRunner

import mixer.build
from mixer import cli
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


def test_a_full_disk_anywhere_else_is_one_error_line_not_a_traceback(tmp_path, monkeypatch, capsys):
    data = tmp_path / "a.jsonl"
    data.write_text('{"instruction": "q", "input": "", "output": "a"}\n')
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nsources:\n  a: {path: a.jsonl, format: alpaca, take: all}\n")

    def lock_on_a_full_disk(path, *args, **kwargs):
        raise OSError(28, "No space left on device", str(path.with_suffix(".lock")))

    sigterm = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(mixer.build, "write_lock", lock_on_a_full_disk)  # written after the output is in place
    monkeypatch.setattr(sys, "argv", ["mixer", "build", str(recipe), "--out", str(tmp_path / "o"), "--json"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 1
    assert signal.getsignal(signal.SIGTERM) is sigterm  # main() in-process leaves the handler as it was
    assert capsys.readouterr().err == (
        f"error: no space left on device writing {tmp_path / 'r.lock'}\n  hint: free some space and run it again\n"
    )
    monkeypatch.undo()  # space freed: running it again writes the lock, although the output is up to date
    monkeypatch.setattr(sys, "argv", ["mixer", "build", str(recipe), "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 0
    lock = tmp_path / "r.lock"
    assert capsys.readouterr().out.splitlines()[-1] == f"lock: {lock} (it was missing)"
    assert (
        json.loads(lock.read_text())["sources"]["a"]["files"][0]["sha256"]
        == hashlib.sha256(data.read_bytes()).hexdigest()
    )
