"""Command line: parse arguments, call one function, render. No logic lives here."""

from __future__ import annotations

import atexit
import gc
import itertools
import json
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from mixer.errors import TOO_LONG_HINT, MixerError, RecipeInvalid, disk_full, name_too_long
from mixer.interrupts import INTERRUPTS, Interrupts, Terminated

if TYPE_CHECKING:
    from mixer.build import Options

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Declarative dataset mixer and recipe compiler for instruction tuning.",
)
# Piped into a file or a CI log, rich would assume 80 columns and cut source names in tables ("wizar…"); a
# wider page keeps them whole. A terminal's own width and an explicit $COLUMNS still win.
LOG_WIDTH = 160
# markup=False: what mixer prints holds the user's text (drop patterns like `[Aa]s an AI`, paths, task names),
# which rich would read as style tags, dropping it or failing on `[/]`; styles are given as `style=` instead
out = Console(
    highlight=False,
    soft_wrap=True,
    markup=False,
    width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else LOG_WIDTH,
)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)

JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]
DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="Directory holding registry sources' files (<name>.jsonl, ...); default $MIXER_DATA_DIR."
    ),
]
Sample = Annotated[
    bool,
    typer.Option(
        "--sample", help="Use the bundled samples for registry sources (offline), keeping the recipe's proportions."
    ),
]


def _show_version(value: bool) -> None:
    if value:
        from mixer import __version__

        out.print(f"mixer {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Print mixer's version and exit."),
    ] = False,
) -> None:
    """Declarative dataset mixer and recipe compiler for instruction tuning."""


def _print_json(value: object) -> None:
    """A command's result: an object leads with "ok", as a failure's does (`_json_failure`), so a script can
    test one key (`jq -e .ok`) whichever way the command ended. Listings (`runs`, `results show`) stay lists."""
    if isinstance(value, dict) and "ok" not in value:
        value = {"ok": True, **value}
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n")


def _build_options(data_dir: Path | None, sample: bool, as_json: bool, refresh: bool = False) -> Options:
    """A command's build options; it says once when the cache cannot be written, since every cache write would
    then fail in silence and each plan, build and no-op check hash and count all inputs again."""
    from mixer.build import Options
    from mixer.files import unwritable

    options = Options(data_dir=data_dir, sample=sample, progress=not as_json, refresh=refresh)
    if reason := unwritable(options.cache):
        err.print(
            f"warning: mixer's cache {options.cache} cannot be written ({reason}): inputs are hashed and counted "
            "again by every command; set MIXER_CACHE_DIR to a folder you can write",
            style="yellow",
        )
    return options


def _decontam_table(hits: list[dict], title: str) -> Table:
    table = Table(title=title)
    for column in ("source", "benchmark", "rows hit", "example span"):
        table.add_column(column, justify="right" if column == "rows hit" else "left")
    for hit in hits:
        span = hit["examples"][0]["span"] if hit["examples"] else ""
        table.add_row(hit["source"], hit["benchmark"], f"{hit['rows']:,}", span)
    return table


def _decontam_summary(found: dict | None) -> dict | None:
    if found is None:
        return None
    hits = [{k: h[k] for k in ("source", "benchmark", "rows")} for h in found["hits"]]
    return {"mode": found["mode"], "n": found["n"], "removed": found["removed"], "hits": hits}


def _rows_in_several_sources(manifest: dict) -> dict[str, int]:
    """Per source; empty for a manifest written before overlap was measured (an up-to-date build's)."""
    return (manifest.get("overlap") or {}).get("rows_in_several_sources", {})


def _pair_text(a: str, b: str, rows_a: int, rows_b: int) -> str:
    return (
        f"{a} and {b} ({rows_a:,} rows each)" if rows_a == rows_b else f"{a} and {b} ({rows_a:,} and {rows_b:,} rows)"
    )


def _hub_text(hub) -> str:
    """id@revision, with the config, split or files that are not the defaults."""
    extras = [f"config {hub.config}"] if hub.config else []
    extras += [f"{len(hub.configs)} configs"] if hub.configs else []
    extras += [f"split {hub.split}"] if hub.split != "train" else []
    extras += [f"file {hub.data_files}"] if hub.data_files else []
    return f"{hub.id}@{hub.revision}" + (f" ({', '.join(extras)})" if extras else "")


def _print_quality(manifest: dict, out_dir: Path) -> None:
    """What a build found in its data, so a contaminated or overlapping mix is seen without opening the report:
    benchmark hits (those with rows only) and rows whose prompt occurs in another source."""
    from mixer.overlap import largest_pairs

    found = manifest.get("decontamination")
    if found is not None:
        hits = [h for h in found["hits"] if h["rows"]]
        benchmarks = ", ".join(b["benchmark"] for b in found["benchmarks"])
        if not hits:
            out.print(f"decontamination: no row shares a {found['n']}-gram or a whole prompt with {benchmarks}")
        else:
            outcome = (
                f"{found['removed']:,} row(s) removed before selection"
                if found["mode"] == "remove"
                else "rows hit are kept (mode: report)"
            )
            out.print(_decontam_table(hits, f"decontamination against {benchmarks}: {outcome}"))
    shared = sum(_rows_in_several_sources(manifest).values())
    if shared:
        pairs = "; ".join(_pair_text(*pair) for pair in largest_pairs(manifest["overlap"]))
        out.print(
            f"overlap: {shared:,} selected row(s) have a prompt that another source also has; most between {pairs}"
        )
    out.print(f"report: {out_dir / 'report.html'}")


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(help="Recipe files, or folders of them.")], as_json: JsonFlag = False
) -> None:
    """Check recipes against the schema and the semantic rules; report every problem as FILE:LINE:COL."""
    from mixer.errors import Diagnostic
    from mixer.inherit import recipes_in
    from mixer.validate import validate_file

    # a folder (`mixer validate recipes/` in CI) stands for its recipes; one without any is reported as a folder
    files = [recipe for file in files for recipe in (recipes_in(file) if os.path.isdir(file) else []) or [file]]
    problems = []
    for file in files:
        try:
            problems += validate_file(file)
        except RecipeInvalid as exc:  # unreadable at a place in it (a byte that is not UTF-8)
            problems += exc.diagnostics
        except MixerError as exc:  # a file that is missing or unreadable: one more problem, the others still checked
            message = exc.message.removeprefix(f"{file}: ")
            problems.append(Diagnostic(str(file), 1, 1, message, exc.hint))
    if as_json:
        _print_json({"ok": not problems, "diagnostics": [p.to_json() for p in problems]})
    else:
        for problem in problems:
            err.print(problem.format())
        if not problems:
            out.print(f"ok: {len(files)} recipe(s) valid")
    raise typer.Exit(2 if problems else 0)


def _plan_table(plan) -> Table:
    table = Table(title=f"{plan.recipe} — seed {plan.seed}" + (" (bundled samples)" if plan.sample else ""))
    for column in (
        "source",
        "format",
        "origin",
        "selector",
        "available",
        "selected",
        "share",
        "upsample",
        "est. tokens",
    ):
        table.add_column(
            column,
            justify="right" if column in ("available", "selected", "share", "upsample", "est. tokens") else "left",
        )
    for s in plan.sources:
        share = s.selected / plan.total_rows if plan.total_rows else 0
        table.add_row(
            s.name,
            s.format,
            s.origin,
            s.selector,
            f"{s.available:,}",
            f"{s.selected:,}",
            f"{share:.1%}",
            f"{s.upsample:g}×",
            f"{s.est_tokens:,}",
        )
    table.add_row("total", "", "", "", "", f"{plan.total_rows:,}", "100%", "", f"{plan.est_tokens:,}", style="bold")
    return table


def _print_weights_note(document: dict, rows: int) -> None:
    from mixer.plan import total_is_not_the_mixture, weights_short_of_total

    for note in (weights_short_of_total(document), total_is_not_the_mixture(document, rows)):
        if note:
            err.print(f"note: {note}", style="yellow")


def _print_empty_sources(plan) -> None:
    """A source that contributes nothing is most often a filter that matches nothing (`lang: [EN]`), which a
    table row of zeros hides among the others: say which step took its rows."""
    from mixer.plan import dedup_took_text, removed_steps

    for s in plan.sources:
        if s.selected or s.selector == "take: 0":  # a seed pool for an evolve block gives no rows by design
            continue
        removed = [f"{step} {n:,}" for step, n in removed_steps(s.counts).items()]
        why = f": {s.counts.get('read', 0):,} read, removed by " + ", ".join(removed) if removed else ""
        if took := dedup_took_text(s.counts, plan.recipe_path):
            why += f"; {took}"
        err.print(f"note: source {s.name!r} contributes no rows{why}", style="yellow")


@app.command()
def plan(recipe: Path, data_dir: DataDir = None, sample: Sample = False, as_json: JsonFlag = False) -> None:
    """Show what a build would produce: rows per source, shares, upsampling, estimated tokens, fingerprint."""
    from mixer.pipeline import plan_recipe

    loaded, result = plan_recipe(recipe, _build_options(data_dir, sample, as_json))
    if as_json:
        _print_json(result.to_json())
        return
    out.print(_plan_table(result))
    if result.eval_rows:
        out.print(
            f"test split: the last {result.eval_rows:,} rows of the shuffled mixture (mixture.eval); train: "
            f"{result.total_rows - result.eval_rows:,}"
        )
    _print_weights_note(loaded.document, result.total_rows)
    _print_empty_sources(result)
    if result.evolve:
        out.print(_evolve_estimate_table(result.evolve))
        for e in result.evolve:
            for key in e["unset_keys"]:
                out.print(
                    f"note: evolve.{e['block']} calls OpenAI's API and ${key} is not set: a build stops at the "
                    f"block's first call not in the cache (export {key}=...)",
                )
    out.print(f"plan fingerprint: {result.fingerprint}")


def _evolve_estimate_table(estimates: tuple[dict, ...]) -> Table:
    table = Table(title="evolve blocks (upper bounds: every evolution survives; no call made)")
    for column in ("block", "seeds", "rounds", "max calls", "est. tokens", "est. USD", "budget", "fits"):
        table.add_column(column, justify="left" if column == "block" else "right")
    for e in estimates:
        budget = " / ".join(
            part
            for part in (
                f"${e['budget_usd']:g}" if e["budget_usd"] is not None else "",
                f"{e['budget_tokens']:,} tok" if e["budget_tokens"] is not None else "",
            )
            if part
        )
        table.add_row(
            e["block"],
            f"{e['seeds']:,}",
            str(e["rounds"]),
            f"{e['max_calls']:,}",
            f"{e['est_tokens']:,}",
            f"${e['est_usd']:,.2f}" if e["prices_known"] else "unknown price",
            budget or "none",
            "yes" if e["fits_budget"] else "NO: the run will stop at the budget",
        )
    return table


def _evolve_table(stats: dict[str, dict]) -> Table:
    from mixer.evolve.cost import usd_text

    table = Table(title="evolve")
    for column in ("block", "round", "input", "eliminated", "surviving", "tokens", "USD"):
        table.add_column(column, justify="left" if column in ("block", "eliminated") else "right")
    for name, block in stats.items():
        for r in block["rounds"]:
            eliminated = ", ".join(f"{rule} {n}" for rule, n in r["eliminated"].items()) or "-"
            table.add_row(
                name,
                str(r["round"]),
                f"{r['input']:,}",
                eliminated,
                f"{r['surviving']:,}",
                f"{r['tokens']:,}",
                usd_text(r["usd"], block["prices_known"]),
            )
        usage = block["usage"]
        table.add_row(
            name,
            "total",
            f"{block['seeds']:,} seeds",
            f"{block['rejected']:,} rejected",
            f"{block['rows']:,} kept",
            f"{usage['tokens']:,}",
            usd_text(usage["usd"], block["prices_known"]),
            style="bold",
        )
    return table


# what most often eliminates a block's evolutions because of a setting, and the setting to change; a note is
# printed when it took at least NOTE_SHARE of them (a few rules firing is the filter doing its work)
ELIMINATION_FIXES = {
    "truncated": "evolutions cut off at the teacher's max_tokens: raise `teacher.max_tokens` (a reasoning teacher "
    "spends it thinking before it answers)",
    "too_long": "evolutions refused as longer than the teacher's context (or than the account's tokens per "
    "minute): a model with a longer context, or shorter seeds",
    "empty": "evolutions answered with no text: a reasoning teacher that ran out of max_tokens while thinking "
    "sends none; raise `teacher.max_tokens`",
}
JUDGE_FIX = (
    "judge verdicts were neither 'Equal' nor 'Not Equal' (each eliminated): a reasoning judge needs "
    "`judge.max_tokens` well above its default of 8; the rejects file has each answer"
)
NOTE_SHARE = 0.2


def _print_evolve(stats: dict[str, dict]) -> None:
    """The block table, then a note for each block that lost much of its work to a setting: the table counts
    rows by rule, and a team that set a reasoning teacher's max_tokens too low saw only "truncated 1,204"."""
    out.print(_evolve_table(stats))
    for name, block in stats.items():
        evolved = sum(r["evolved"] for r in block["rounds"])
        lost = [
            (sum(r["eliminated"].get(rule, 0) for r in block["rounds"]), fix) for rule, fix in ELIMINATION_FIXES.items()
        ]
        lost.append((block.get("judge_unparsable", 0), JUDGE_FIX))
        for n, fix in lost:
            if evolved and n / evolved >= NOTE_SHARE:
                out.print(f"note: evolve.{name}: {n:,} of {evolved:,} {fix}", style="yellow")


@app.command()
def decontam(recipe: Path, data_dir: DataDir = None, sample: Sample = False, as_json: JsonFlag = False) -> None:
    """Audit every available row without building: benchmark hits, exact and near-duplicate overlap; writes nothing."""
    from mixer.pipeline import decontam_only

    report = decontam_only(recipe, _build_options(data_dir, sample, as_json))
    if as_json:
        _print_json(report)
        return
    found = report["decontamination"]
    if found is not None:
        out.print(_decontam_table(found["hits"], f"decontamination: {found['n']}-grams + exact prompts"))
    overlap = report["overlap"]
    titles = {
        "matrix": "rows of each source whose prompt also occurs in another source",
        "near": f"... and that have a near duplicate there (word {overlap['near']['n']}-gram Jaccard "
        f">= {overlap['near']['threshold']})",
    }
    for key, title in titles.items():
        values = overlap[key] if key == "matrix" else overlap[key]["matrix"]
        matrix = Table(title=title)
        matrix.add_column("source")
        for name in overlap["sources"]:
            matrix.add_column(name, justify="right")
        for name, row in zip(overlap["sources"], values, strict=True):
            matrix.add_row(name, *("—" if v is None else f"{v:,}" for v in row))
        out.print(matrix)


def _not_a_build(path: Path) -> MixerError:
    from mixer.runs import instead_of

    problem = "no manifest.json" if path.is_dir() else "is a file, not a build" if path.exists() else "no such folder"
    return MixerError(f"{path}: {problem}", instead_of(path, builds_only=True) or "give the folder `mixer build` wrote")


@app.command()
def stats(
    out_dir: Path,
    tokenizer: Annotated[
        Path | None, typer.Option("--tokenizer", help="tokenizer.json for exact token counts (default: chars / 4).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Regenerate stats.json and report.html of a built mixture from its shards and manifest."""
    from mixer.stats import regenerate

    if not (out_dir / "manifest.json").is_file():
        raise _not_a_build(out_dir)
    result = regenerate(out_dir, tokenizer)
    if as_json:
        _print_json(result)
        return
    out.print(
        f"{result['rows']:,} rows, ~{result['est_tokens']:,} tokens: wrote {out_dir / 'stats.json'} and "
        f"{out_dir / 'report.html'}"
    )


@app.command()
def evolve(
    recipe: Path,
    block: Annotated[str | None, typer.Option("--block", help="Run only this evolve block.")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Default: <output.dir>.evolve/")] = None,
    data_dir: DataDir = None,
    sample: Sample = False,
    as_json: JsonFlag = False,
) -> None:
    """Run only the recipe's evolve blocks (cached, budgeted, resumable); `mixer build` reuses their calls."""
    from mixer.pipeline import evolve_only

    root, stats = evolve_only(recipe, _build_options(data_dir, sample, as_json), block=block, out=out_dir)
    if as_json:
        _print_json({"out_dir": str(root), "evolve": stats})
        return
    _print_evolve(stats)
    out.print(f"wrote {', '.join(str(root / name) for name in stats)}")


@app.command()
def build(
    recipe: Path,
    data_dir: DataDir = None,
    sample: Sample = False,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Output directory (overrides output.dir).")] = None,
    locked: Annotated[bool, typer.Option("--locked", help="Refuse to build if inputs differ from the lock.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if nothing changed.")] = False,
    refresh: Annotated[
        bool, typer.Option("--refresh", help="Ask the hub for the current commit of moving revisions (main).")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Materialise the mixture: parquet shards, manifest.json, dataset card; update the recipe's lock."""
    from mixer.build import build as run_build

    result = run_build(
        recipe,
        _build_options(data_dir, sample, as_json, refresh),
        out=out_dir,
        locked=locked,
        force=force,
    )
    if as_json:
        _print_json(
            {
                "status": result.status,
                "out_dir": str(result.out_dir),
                "rows": result.manifest["totals"]["rows"],
                "eval_rows": result.manifest["totals"].get("eval_rows", 0),  # of `rows`, in the test split
                "eval_copies_of_train_rows": result.manifest["totals"].get("eval_copies_of_train_rows", {}),
                "lock": str(result.lock) if result.lock else None,
                "build_fingerprint": result.manifest["build_fingerprint"],
                "decontamination": _decontam_summary(result.manifest.get("decontamination")),
                "rows_in_several_sources": _rows_in_several_sources(result.manifest),
                "report": str(result.out_dir / "report.html"),
                "replaced": result.replaced,
            }
        )
        return
    if result.status == "up-to-date":
        out.print(f"up to date: {result.out_dir} (nothing changed since the last build; --force rebuilds)")
        if result.lock:
            out.print(f"lock: {result.lock} (written again: it was missing or did not match the inputs)")
        return
    out.print(_plan_table(result.plan))
    _print_weights_note(result.manifest["resolved_recipe"], result.manifest["totals"]["rows"])
    _print_empty_sources(result.plan)
    if "evolve" in result.manifest:
        _print_evolve(result.manifest["evolve"])
    from mixer.plan import rows_text

    held_out = result.manifest["totals"].get("eval_rows")
    out.print(
        f"wrote {rows_text(result.manifest['totals']['rows'])} in {result.manifest['totals']['shards']} "
        f"shard(s) to {result.out_dir}" + (f", the last {held_out:,} as the test split" if held_out else "")
    )
    if copied := result.manifest["totals"].get("eval_copies_of_train_rows"):
        out.print(
            f"⚠ {sum(copied.values()):,} of the test split's {held_out:,} rows are copies of rows the train split "
            f"also holds ({', '.join(f'{k:,} of {n}' for n, k in copied.items())}, upsampled with fraction > 1): "
            "their loss is not a held-out loss. A `take` of at most the source's rows holds out only unseen rows",
        )
    _print_quality(result.manifest, result.out_dir)
    if result.lock:
        out.print(f"lock: {result.lock}")
    if result.replaced:
        out.print(
            f"note: {result.out_dir} held the mixture of {result.replaced}, which this build replaced; give this "
            "recipe its own output.dir (or --out) to keep both"
        )


@app.command()
def train(
    recipe: Path,
    stage: Annotated[str | None, typer.Option("--stage", help="Run only this stage.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the files and commands; run nothing.")] = False,
    slurm: Annotated[bool, typer.Option("--slurm", help="Prepare the stages and write an sbatch script.")] = False,
    runs_dir: Annotated[Path | None, typer.Option("--runs-dir", help="Default: runs/<recipe name>.")] = None,
    data_dir: DataDir = None,
    sample: Sample = False,
    restart: Annotated[
        bool, typer.Option("--restart", help="Delete the stages' checkpoints and final models; train from the start.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Run the recipe's training stages in order through `accelerate launch`."""
    from mixer.train.launch import display
    from mixer.train.stages import train_recipe

    report = train_recipe(
        recipe,
        only=stage,
        dry_run=dry_run,
        slurm=slurm,
        runs_dir=runs_dir,
        options=_build_options(data_dir, sample, as_json),
        restart=restart,
    )
    if as_json:
        _print_json(
            {
                "runs_dir": str(report.root),
                "metrics": report.metrics,
                "finished_before": report.finished,
                "slurm_script": str(report.slurm_script) if report.slurm_script else None,
                "stages": [
                    {"name": p.spec.name, "run_dir": str(p.run_dir), "command": display(p.command), "files": p.files}
                    for p in report.stages
                ],
            }
        )
        return
    for prepared in report.stages:
        if dry_run:
            out.print(f"# stage {prepared.spec.name} ({prepared.spec.kind}) -> {prepared.run_dir}")
            for name, content in prepared.files.items():
                out.print(f"## {prepared.run_dir / name}\n{content.rstrip()}")
            out.print(f"$ {display(prepared.command)}\n")
        elif prepared.spec.name in report.finished:
            out.print(
                f"stage {prepared.spec.name}: trained before from the same inputs ({prepared.run_dir}), nothing to "
                "do; --restart trains it again",
            )
        elif prepared.spec.name in report.metrics:
            metrics = report.metrics[prepared.spec.name]
            held_out = (
                f", test split loss {_figure(metrics['eval_loss'])}" if metrics.get("eval_loss") is not None else ""
            )
            if (accuracy := metrics.get("eval_rewards/accuracy")) is not None:
                held_out += f", reward accuracy {accuracy:.1%}"
            first, final = (_figure(metrics.get(name)) for name in ("first_loss", "final_loss"))
            out.print(
                f"stage {prepared.spec.name}: {metrics.get('steps')} steps, loss {first} -> {final}{held_out} "
                f"({prepared.run_dir})",
            )
    if report.slurm_text is not None:
        if dry_run:
            out.print(report.slurm_text)
        else:
            out.print(f"wrote {report.slurm_script}: submit with `sbatch {report.slurm_script}`")


def _figure(value: object) -> str:
    """A metric as the summary shows it: four significant digits, as a float32 loss has no more to give."""
    return f"{value:.4g}" if isinstance(value, int | float) else "n/a"


@app.command()
def sources(as_json: JsonFlag = False) -> None:
    """List the registry of known datasets (and the formats inline sources can use)."""
    from mixer.adapters import FORMATS, format_spec
    from mixer.adapters.formats import SUPPORTED_SUFFIXES
    from mixer.benchmark_sets import KNOWN
    from mixer.registry import load_registry

    registry = load_registry()
    benchmarks = {name: {"fields": list(known.fields), "hub": _hub_text(known.hub)} for name, known in KNOWN.items()}
    if as_json:
        _print_json(
            {
                "benchmarks": benchmarks,
                "sources": {
                    n: {
                        "format": e.format,
                        "license": e.license,
                        "expected_rows": e.expected_rows,
                        "hub": e.hub.id if e.hub else None,
                        "description": e.description,
                    }
                    for n, e in registry.items()
                },
                "formats": {f: format_spec(f).summary for f in FORMATS},
                "file_suffixes": list(SUPPORTED_SUFFIXES),
            }
        )
        return
    table = Table(title="sources registry")
    for column in ("name", "format", "rows", "license", "hub"):
        table.add_column(column, justify="right" if column == "rows" else "left")
    for name, entry in registry.items():
        table.add_row(
            name,
            entry.format,
            f"{entry.expected_rows:,}",
            entry.license,
            f"{entry.hub.id}@{entry.hub.revision}" if entry.hub else "",
        )
    out.print(table)
    formats = Table(title="formats (for inline `path:` and `hub:` sources)")
    formats.add_column("format")
    formats.add_column("fields")
    for fmt in FORMATS:
        formats.add_row(fmt, format_spec(fmt).summary)
    out.print(formats)
    out.print(f"files: {', '.join(SUPPORTED_SUFFIXES)}, and folders `datasets` wrote with save_to_disk")
    known = Table(title="benchmarks for mixture.decontaminate (by name: --data-dir/<name>.jsonl, else the hub)")
    for column in ("name", "field", "hub"):
        known.add_column(column)
    for name, info in benchmarks.items():
        known.add_row(name, ", ".join(info["fields"]), info["hub"])
    out.print(known)


results_app = typer.Typer(no_args_is_help=True, help="Attach evaluation results to a run or build directory.")
app.add_typer(results_app, name="results")


@results_app.command("add")
def results_add(
    run_dir: Path,
    files: Annotated[list[Path], typer.Argument(help="lm-eval results JSON, AlpacaEval CSV/JSON, plain JSON/YAML.")],
    model: Annotated[str | None, typer.Option("--model", help="The row of a multi-model leaderboard.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Check and copy results files into RUN_DIR/results/."""
    from mixer.results import add_results

    unread: list[str] = []
    scores = add_results(run_dir, files, model, unread)
    for entry in unread:
        err.print(f"warning: {entry}, not a number: left out")
    if as_json:
        _print_json({"results": str(run_dir / "results"), "scores": [s.to_json() for s in scores], "left_out": unread})
        return
    out.print(f"added {len(scores)} score(s) from {len(files)} file(s) to {run_dir / 'results'}")


@results_app.command("show")
def results_show(run_dir: Path, as_json: JsonFlag = False) -> None:
    """The normalised score table of a run directory."""
    from mixer.results import run_scores

    scores = run_scores(run_dir, must_exist=True)
    if as_json:
        _print_json([s.to_json() for s in scores])
        return
    if not scores:
        err.print(f"no results in {run_dir}: attach them with `mixer results add {run_dir} FILE`")
        return
    table = Table(title=str(run_dir))
    for column in ("task", "metric", "value", "stderr", "n", "shots", "judge", "source"):
        table.add_column(column)
    for s in scores:
        table.add_row(
            s.task,
            s.metric,
            f"{s.value:.4g}",
            "—" if s.stderr is None else f"{s.stderr:.3g}",
            str(s.n or "—"),
            str(s.eval_config.get("shots")),
            str(s.eval_config.get("judge") or "—"),
            s.source,
        )
    out.print(table)


@app.command()
def runs(
    dirs: Annotated[list[Path] | None, typer.Argument(help="Where to look (default: runs/ and out/).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List run and build directories with their recipe fingerprint and headline metrics."""
    from mixer.runs import find_runs

    where = dirs or [Path("runs"), Path("out")]
    if dirs and (missing := [d for d in dirs if not d.is_dir()]):  # the defaults may not exist yet
        raise MixerError(f"{missing[0]}: not a directory", "give folders that hold run or build directories")
    found = find_runs(where)
    if as_json:
        _print_json(found)
        return
    if not found:
        out.print(
            f"no run or build directories under {' or '.join(str(d) for d in where)}: `mixer build` writes "
            "out/<name>, `mixer train` runs/<name>/<stage>; give other folders as arguments"
        )
        return
    table = Table(title="runs")
    for column in ("path", "kind", "status", "recipe", "fingerprint", "rows", "headline metrics"):
        table.add_column(column)
    for run in found:
        headline = ", ".join(f"{k} {v:.3g}" for k, v in run["headline"].items())
        table.add_row(
            run["path"],
            run["kind"],
            run["status"] or "—",  # a failed, interrupted or only prepared run must not read as a finished one
            run["recipe"] or "—",
            (run["fingerprint"] or "—")[:12],
            f"{run['rows']:,}" if run["rows"] is not None else "—",
            headline or "—",
        )
    out.print(table)


@app.command()
def diff(
    sides: Annotated[list[str], typer.Argument(help="Run dirs, build outputs or recipes (PATH or PATH@GITREF).")],
    baseline: Annotated[str | None, typer.Option("--baseline", help="Compare every other side to this one.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table | markdown | json | html")] = "table",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to a file instead of stdout.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The same as --format json.")] = False,
) -> None:
    """Composition and benchmark deltas between mixes, with significance and comparability warnings."""
    from mixer import report
    from mixer.diff import compare, load_side

    if as_json and fmt not in ("table", "json"):
        raise MixerError(f"--json and --format {fmt} ask for two formats", "give one of them")
    fmt = "json" if as_json else fmt
    if fmt not in ("table", "markdown", "json", "html"):
        raise MixerError(f"unknown format {fmt!r}", "use table, markdown, json or html")
    specs = ([baseline] if baseline else []) + [s for s in sides if s != baseline]
    if len(specs) < 2:
        raise MixerError("mixer diff needs two sides (or --baseline and one more)")
    loaded = [load_side(spec) for spec in specs]
    comparisons = [compare(loaded[0], other) for other in loaded[1:]]
    if fmt == "table":
        console = Console(file=output.open("w", encoding="utf-8"), width=160, markup=False) if output else out
        report.render_terminal(comparisons, console)
        return
    text = {"markdown": report.render_markdown, "json": report.render_json, "html": report.render_html}[fmt](
        comparisons
    )
    if output:
        output.write_text(text, encoding="utf-8")
        err.print(f"wrote {output}")
    else:
        sys.stdout.write(text)


def _json_failure(detail: dict[str, Any]) -> None:
    """With --json, a failure is JSON on stdout too, so a script reads one shape whatever happened; the text on
    stderr stays for the person watching."""
    arguments = sys.argv[1:]
    format_json = "--format=json" in arguments or ("--format", "json") in itertools.pairwise(arguments)
    if "--json" in arguments or format_json:
        _print_json({"ok": False, **detail})


def _notes(exc: BaseException) -> list[str]:
    """What the step that was stopped added on the way out (an evolve block: its calls are cached)."""
    return list(getattr(exc, "__notes__", ()))


def _ctrl_c_behind(stop: SystemExit) -> KeyboardInterrupt | None:
    """typer ends a command stopped by Ctrl-C with a silent exit 130 (an Exit raised from the KeyboardInterrupt),
    so the message below, and what the stopped step noted, were never printed: the interruption is found on the
    exit's chain (typer's code, 130, alone: an exit with another code is the command's own)."""
    if stop.code != 130:
        return None
    seen: BaseException | None = stop
    chain: set[int] = set()
    while seen is not None and id(seen) not in chain:
        if isinstance(seen, KeyboardInterrupt):
            return seen
        chain.add(id(seen))
        seen = seen.__cause__ or seen.__context__
    return None


def _run(interrupts: Interrupts) -> None:
    """The app, with every error a user can act on printed as one message and an exit code."""
    try:
        try:
            app()
        except SystemExit as exc:
            ctrl_c = _ctrl_c_behind(exc)
            if ctrl_c is None:
                raise
            raise ctrl_c from None
        except Exception as exc:
            if interrupts.received:  # a signal's exception that came out of a polars call as another error
                raise interrupts.received from exc
            raise
    except RecipeInvalid as exc:
        for diagnostic in exc.diagnostics:
            err.print(diagnostic.format())
        _json_failure({"diagnostics": [d.to_json() for d in exc.diagnostics]})
        sys.exit(2)
    except MixerError as exc:
        err.print(f"error: {exc}")
        _json_failure({"error": exc.message, "hint": exc.hint})
        sys.exit(1)
    except (KeyboardInterrupt, Terminated) as exc:
        terminated = isinstance(exc, Terminated)
        message = f"{'terminated' if terminated else 'interrupted'}: the previous output, if any, is unchanged"
        notes = _notes(exc)
        err.print(message, *notes, sep="\n  ")
        _json_failure({"error": message, "notes": notes})
        sys.exit(128 + signal.SIGTERM if terminated else 130)
    except Exception as exc:
        filename = getattr(exc, "filename", None)
        if name_too_long(exc):  # a recipe, --out or output.dir path the file system refuses
            where = f": {filename}" if filename else ""
            message, hint = f"a name in this path is longer than the file system allows{where}", TOO_LONG_HINT
        elif disk_full(exc):  # outside the build's own folders (the cache, a lock file)
            where = f" writing {filename}" if filename else ""
            message, hint = f"no space left on device{where}", "free some space and run it again"
        else:
            raise
        err.print(f"error: {message}\n  hint: {hint}")
        _json_failure({"error": message, "hint": hint})
        sys.exit(1)


def main() -> None:
    # Python's shutdown runs the cycle collector over every object left, and walking the modules loaded by then
    # takes it ~0.04 s after a no-op rebuild (a tenth of it) and more after a build (polars) or an evolve block
    # (openai's pydantic). By then every output is closed and renamed and nothing needs a collector to be
    # freed, so at exit (only then) the collector skips them.
    atexit.register(gc.freeze)
    restore_handlers = INTERRUPTS.install()  # see mixer.interrupts
    try:
        _run(INTERRUPTS)
    finally:  # called in-process (tests, a notebook), main() leaves the signals as it found them
        restore_handlers()
