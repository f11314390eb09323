"""The command line's own text: --help of every command, and the errors no step of a command words itself."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import sys
from concurrent.futures import Future

import pytest
import typer
from typer.testing import CliRunner

import mixer.build
from mixer import cli, threads
from mixer.cli import app
from mixer.interrupts import Interrupts, Terminated

from conftest import run_mixer, write_recipe


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


def test_a_noop_rebuild_through_the_command_line_imports_neither_polars_nor_pydantic(tmp_path):
    """Start-up is most of a no-op rebuild: typer 0.29 imported pydantic for every command (~0.1 s, a third of
    it), and polars would add more. The module list is Python's own (PYTHONPROFILEIMPORTTIME), of the real command."""
    (tmp_path / "a.jsonl").write_text('{"instruction": "q", "input": "", "output": "a"}\n')
    write_recipe(tmp_path, "name: r\nsources:\n  a: {path: a.jsonl, format: alpaca, take: all}\n")
    assert run_mixer("build", "recipe.yaml", cwd=tmp_path).returncode == 0
    again = run_mixer("build", "recipe.yaml", "--json", cwd=tmp_path, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert json.loads(again.stdout)["status"] == "up-to-date", again.stderr
    imported = {line.rsplit("|", 1)[1].strip() for line in again.stderr.splitlines() if line.startswith("import time:")}
    assert {"typer", "mixer.build"} <= imported  # the list is the command's
    assert not {m.split(".")[0] for m in imported} & {"polars", "pydantic"}


def test_version_is_printed_without_a_command():
    from mixer import __version__

    result = run_mixer("--version")
    assert (result.returncode, result.stdout, result.stderr) == (0, f"mixer {__version__}\n", "")
    assert "--version" in _help_pages()["mixer"]


def test_an_error_after_ctrl_c_is_reported_as_the_interruption(monkeypatch, capsys):
    """pyo3 turns a KeyboardInterrupt raised while polars calls back into Python (reading a dtype) into a
    TypeError ("... is not a Polars data type"): after Ctrl-C that must still end as an interrupted command,
    exit 130 and one line, not a traceback with exit 1."""

    def ctrl_c_inside_polars():
        raise TypeError("'<unprintable str object>' is not a Polars data type")

    monkeypatch.setattr(cli, "app", ctrl_c_inside_polars)
    with pytest.raises(TypeError):  # no Ctrl-C: a bug stays a bug, with its traceback
        cli._run(Interrupts())
    with pytest.raises(SystemExit) as exit_:
        cli._run(Interrupts(received=KeyboardInterrupt))
    assert exit_.value.code == 130
    assert capsys.readouterr().err == "interrupted: the previous output, if any, is unchanged\n"
    with pytest.raises(SystemExit) as exit_:
        cli._run(Interrupts(received=Terminated))
    assert exit_.value.code == 143
    assert capsys.readouterr().err == "terminated: the previous output, if any, is unchanged\n"


def test_typers_silent_exit_130_after_ctrl_c_is_reported_and_other_exits_are_left_alone(monkeypatch, capsys):
    """typer turns a KeyboardInterrupt into `Exit(130)` raised from it, and then a bare SystemExit: mixer's line
    was never printed. An exit with another code (a command's own, even inside an `except KeyboardInterrupt`)
    is passed on as it is."""

    def exits(code: int):
        def app() -> None:
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt:
                sys.exit(code)

        return app

    monkeypatch.setattr(cli, "app", exits(130))
    with pytest.raises(SystemExit) as exit_:
        cli._run(Interrupts())
    assert exit_.value.code == 130
    assert capsys.readouterr().err == "interrupted: the previous output, if any, is unchanged\n"
    monkeypatch.setattr(cli, "app", exits(0))
    with pytest.raises(SystemExit) as exit_:
        cli._run(Interrupts())
    assert exit_.value.code == 0
    assert capsys.readouterr().err == ""


def test_a_signal_is_recorded_and_raised_as_its_exception():
    interrupts = Interrupts()
    with pytest.raises(KeyboardInterrupt):
        interrupts.on_signal(signal.SIGINT, None)
    assert interrupts.received is KeyboardInterrupt
    with pytest.raises(Terminated):
        interrupts.on_signal(signal.SIGTERM, None)
    assert interrupts.received is Terminated
    import polars  # noqa: F401  (mixer called in-process after polars: from a notebook)

    sigint = signal.getsignal(signal.SIGINT)
    undo = interrupts.install()
    assert signal.getsignal(signal.SIGINT) is sigint  # the caller's process is left as it is
    assert interrupts.received is None  # a command run in-process after a stopped one is not stopped too
    undo()
    assert signal.getsignal(signal.SIGINT) is sigint


def test_a_ctrl_c_while_holding_a_lock_is_raised_as_the_block_ends():
    """A KeyboardInterrupt raised inside `concurrent.futures.wait` left a future's lock held and hung a build
    at its shard writer: `wait_for` holds a Ctrl-C while it touches the lock and raises it right after."""
    interrupts = Interrupts()
    got_through = False
    with pytest.raises(KeyboardInterrupt), interrupts.holding():
        interrupts.on_signal(signal.SIGINT, None)  # recorded, not raised here
        got_through = True
    assert got_through and not interrupts.pending
    with interrupts.holding():  # raised once
        pass
    with pytest.raises(KeyboardInterrupt):  # outside a block it is raised at once
        interrupts.on_signal(signal.SIGINT, None)


def test_a_ctrl_c_that_polars_swallowed_is_raised_at_the_next_wait(monkeypatch):
    """pyo3 reports a KeyboardInterrupt raised in a callback of polars as "Exception ignored" and the build
    went on to the end; the main thread's next wait raises it again."""
    interrupts = Interrupts()
    monkeypatch.setattr(threads, "INTERRUPTS", interrupts)
    done = Future()
    done.set_result(7)
    assert threads.wait_for(done) == 7
    with contextlib.suppress(KeyboardInterrupt):  # raised in a polars callback, and swallowed there
        interrupts.on_signal(signal.SIGINT, None)
    with pytest.raises(KeyboardInterrupt):
        threads.wait_for(done)


def test_an_output_path_with_a_name_too_long_is_one_error_line_not_a_traceback(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"instruction": "q", "input": "", "output": "a"}\n')
    long = "o" * 300
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"name: r\nsources:\n  a: {{path: a.jsonl, format: alpaca, take: all}}\noutput: {{dir: {long}}}\n"
    )
    hint = "shorten it: most file systems allow 255 bytes in one file or folder name"
    for extra in (["--out", str(tmp_path / long / "x")], []):
        result = run_mixer("build", str(recipe), *extra, "--json", cwd=tmp_path)
        assert result.returncode == 1
        message = f"a name in this path is longer than the file system allows: {tmp_path / long}"
        assert result.stderr.startswith(f"error: {message}") and result.stderr.endswith(f"\n  hint: {hint}\n")
        failure = json.loads(result.stdout)
        assert failure["ok"] is False and failure["error"].startswith(message) and failure["hint"] == hint


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
    captured = capsys.readouterr()
    assert captured.err == (
        f"error: no space left on device writing {tmp_path / 'r.lock'}\n  hint: free some space and run it again\n"
    )
    assert json.loads(captured.out) == {
        "ok": False,
        "error": f"no space left on device writing {tmp_path / 'r.lock'}",
        "hint": "free some space and run it again",
    }
    monkeypatch.undo()  # space freed: running it again writes the lock, although the output is up to date
    monkeypatch.setattr(sys, "argv", ["mixer", "build", str(recipe), "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 0
    lock = tmp_path / "r.lock"
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"lock: {lock} (written again: it was missing or did not match the inputs)"
    )
    assert (
        json.loads(lock.read_text())["sources"]["a"]["files"][0]["sha256"]
        == hashlib.sha256(data.read_bytes()).hexdigest()
    )


def test_a_source_left_with_no_rows_is_named_with_the_step_that_took_them(tmp_path):
    """`take: all` behind a filter that matches nothing (`lang: [EN]`, a max_chars too small) used to show as
    a row of zeros in the plan table, easy to miss among the others."""
    (tmp_path / "a.jsonl").write_text(
        "".join(json.dumps({"instruction": f"question {i}", "output": "an answer"}) + "\n" for i in range(3))
    )
    recipe = write_recipe(
        tmp_path,
        """
        name: e
        sources:
          short: {path: a.jsonl, format: alpaca, take: all, max_chars: 5}
          kept: {path: a.jsonl, format: alpaca, take: all}
          seeds_only: {path: a.jsonl, format: alpaca, take: 0}
          copy: {path: a.jsonl, format: alpaca, take: all}
        mixture: {dedup: exact}
        """,
    )
    result = run_mixer("plan", str(recipe))
    assert result.returncode == 0, result.stderr
    assert "note: source 'short' contributes no rows: 3 read, removed by max_chars 3\n" in result.stderr
    assert (  # rows taken by dedup are copies of another source's: which is the audit's to say
        "note: source 'copy' contributes no rows: 3 read, removed by dedup 3; dedup keeps each copy in the source "
        f"listed first (or the first copy in its own file); `mixer decontam {recipe}` shows which sources share "
        "its rows"
    ) in " ".join(result.stderr.split())
    assert "'kept'" not in result.stderr
    assert "'seeds_only'" not in result.stderr  # `take: 0` asks for none (an evolve block's seed pool): no news


def test_a_cache_that_cannot_be_written_is_said_once_and_the_command_goes_on(tmp_path):
    """Cache writes fail in silence (they only cost speed), so with MIXER_CACHE_DIR or HOME unwritable, as a
    cluster node's read-only home is, every plan and no-op rebuild hashed and counted all inputs again, unsaid."""
    (tmp_path / "a.jsonl").write_text(
        "".join(json.dumps({"instruction": f"question {i}", "output": "an answer"}) + "\n" for i in range(5))
    )
    os.utime(tmp_path / "a.jsonl", (1e9, 1e9))  # older than RACY_SECONDS on a slow machine too: its hash is kept
    recipe = write_recipe(
        tmp_path,
        f"name: c\nsources:\n  a: {{path: a.jsonl, format: alpaca, take: all}}\noutput: {{dir: {tmp_path / 'o'}}}\n",
    )
    (tmp_path / "in-the-way").write_text("")
    for command, cache in (("plan", "in-the-way"), ("build", "in-the-way/cache")):
        result = run_mixer(command, str(recipe), "--json", env={"MIXER_CACHE_DIR": str(tmp_path / cache)})
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["ok"] is True
        reason = "a file, not a folder" if cache == "in-the-way" else "Not a directory"
        warning = (
            f"warning: mixer's cache {tmp_path / cache} cannot be written ({reason}): inputs are hashed and counted "
            "again by every command; set MIXER_CACHE_DIR to a folder you can write"
        )
        assert " ".join(result.stderr.split()).count(warning) == 1, result.stderr
    writable = tmp_path / "cache"
    result = run_mixer("build", str(recipe), "--force", env={"MIXER_CACHE_DIR": str(writable)})
    assert result.returncode == 0 and "warning" not in result.stderr, result.stderr
    assert sorted(p.name for p in writable.iterdir()) == ["file-hashes.json", "plan-counts"]  # no probe file left


def test_weights_that_fall_short_of_the_total_are_pointed_out(tmp_path):
    """Weights are shares of mixture.total; 0.3 + 0.3 builds 60% of it, which a user who meant proportions
    only finds in the total row."""
    (tmp_path / "a.jsonl").write_text(
        "".join(json.dumps({"instruction": f"question {i}", "output": "an answer"}) + "\n" for i in range(20))
    )
    body = "name: w\nsources:\n  a: {path: a.jsonl, format: alpaca, weight: %s}\n  b: {path: a.jsonl, format: alpaca, weight: %s}\nmixture: {total: 10}\noutput: {dir: %s}\n"
    recipe = write_recipe(tmp_path, body % ("0.3", "0.3", tmp_path / "out"))
    note = "note: the weights add up to 0.6, so the mixture is 60% of mixture.total (6 of 10 rows)"
    for command in ("plan", "build"):
        result = run_mixer(command, str(recipe))
        assert result.returncode == 0, result.stderr
        assert note in result.stderr, command
    # 0.8 + 4.7 rows is 5.4999999999999991 in floating point: the note rounds as the build does
    recipe.write_text(body % ("0.08", "0.47", tmp_path / "out"))
    result = run_mixer("build", str(recipe), "--force")
    assert "(6 of 10 rows)" in result.stderr, result.stderr
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["totals"]["rows"] == 6
    recipe.write_text(body % ("0.7", "0.3", tmp_path / "out"))
    assert "weights add up" not in run_mixer("plan", str(recipe)).stderr


def test_a_total_that_is_not_the_mixtures_size_is_pointed_out(tmp_path):
    """`mixture.total: 3000` beside take sources built 4,915 rows: the total is what weighted sources share.
    Without any weight it does nothing at all."""
    (tmp_path / "a.jsonl").write_text(
        "".join(json.dumps({"instruction": f"question {i}", "output": "an answer"}) + "\n" for i in range(20))
    )
    body = (
        "name: w\nsources:\n  a: {path: a.jsonl, format: alpaca, %s}\n  b: {path: a.jsonl, format: alpaca, take: 4}\n"
    )
    mixed = write_recipe(tmp_path, body % "weight: 0.5" + "mixture: {total: 10}\n", "mixed.yaml")
    for arguments in (["plan", str(mixed)], ["build", str(mixed), "--out", str(tmp_path / "o")]):
        result = run_mixer(*arguments)
        assert result.returncode == 0, result.stderr
        assert (
            "note: mixture.total (10) is what the 1 weighted source(s) share; the 1 with take or fraction add their "
            "own rows, so the mixture has 9"
        ) in result.stderr, arguments[0]
    unused = write_recipe(tmp_path, body % "take: 3" + "mixture: {total: 10}\n", "unused.yaml")
    assert (
        "note: mixture.total (10) is not used: it is what sources with a `weight` share, and none has one"
        in run_mixer("plan", str(unused)).stderr
    )
    fine = write_recipe(tmp_path, body % "take: 3", "fine.yaml")
    assert "mixture.total" not in run_mixer("plan", str(fine)).stderr


def test_with_json_a_failure_is_json_on_stdout_too(tmp_path):
    """A script that asked for --json reads stdout: a failure there too, with the text still on stderr."""
    bad = write_recipe(tmp_path, "name: t\nsources:\n  a: {source: dolly, take: 1, fraction: 2}\n")
    result = run_mixer("plan", str(bad), "--json")
    assert result.returncode == 2 and "conflicts with 'take'" in result.stderr
    payload = json.loads(result.stdout)
    assert payload["ok"] is False and payload["diagnostics"][0]["line"] == 3
    result = run_mixer("build", str(tmp_path / "nope.yaml"), "--json")
    assert result.returncode == 1 and "recipe not found" in result.stderr
    assert json.loads(result.stdout) == {
        "ok": False,
        "error": f"{tmp_path / 'nope.yaml'}: recipe not found",
        "hint": None,
    }
    # and a success leads with "ok": true, so `jq -e .ok` tells the two apart; listings stay lists
    good = write_recipe(tmp_path, "name: t\nsources:\n  a: {source: dolly, take: 1}\n", "good.yaml")
    planned = json.loads(run_mixer("plan", str(good), "--sample", "--json").stdout)
    assert next(iter(planned)) == "ok" and planned["ok"] is True
    assert json.loads(run_mixer("runs", "--json", cwd=tmp_path).stdout) == []


def test_mixer_train_summary_shows_losses_to_four_digits():
    """The summary printed `loss 6.709479331970215 -> 5.393017768859863`: a float32's noise, in full."""
    from mixer.cli import _figure

    assert [_figure(v) for v in (6.709479331970215, 0.22123552858829498, 12, None)] == ["6.709", "0.2212", "12", "n/a"]
