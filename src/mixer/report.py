"""Render comparisons: rich terminal tables, Markdown, JSON and one self-contained HTML page.

The HTML embeds its chart as inline SVG drawn by matplotlib, so it opens offline and can be attached to a PR.
"""

from __future__ import annotations

import html
import io
import json

from rich.console import Console
from rich.table import Table
from rich.text import Text

from mixer.diff import OWN_UNITS, POINTS, Comparison, MetricDiff, MetricRow
from mixer.markup import html_table
from mixer.results import UNITS


def _rows(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def _share(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


def verdict(row: MetricRow) -> str:
    if row.se_delta is None:
        return "no stderr"
    if not row.significant:
        return "n.s."
    return "significant ↑" if row.direction == "better" else "significant ↓"


MEAN_UNITS = {POINTS: "percentage points", OWN_UNITS: "the scores' own units"}


def mean_sentence(m: MetricDiff) -> str | None:
    """The aggregate line, the same in every format: over how many tasks, in which unit, and what it left out."""
    if m.mean_delta is None:
        return None
    unchanged = m.tasks - m.tasks_better - m.tasks_worse
    counts = f"{m.tasks_better} better, {m.tasks_worse} worse" + (f", {unchanged} unchanged" if unchanged else "")
    unit = MEAN_UNITS[m.mean_unit]
    sentence = f"mean Δ over {m.tasks} task(s), direction-aware, in {unit}: {m.mean_delta:+.4g} ({counts})"
    if m.left_out:
        sentence += f"; left out, their scale not known: {', '.join(m.left_out)}"
    return sentence


NO_RESULTS = "metrics: neither side has benchmark results (attach them with `mixer results add DIR FILE`)"


def _no_results(comp: Comparison) -> bool:
    m = comp.metrics
    return not (m.rows or m.only_a or m.only_b or m.warnings)


def _only_lines(comp: Comparison) -> list[str]:
    """The metrics one side has and the other lacks, a line each, as every format lists them."""
    m = comp.metrics
    return [f"only in A: {t} {k}" for t, k in m.only_a] + [f"only in B: {t} {k}" for t, k in m.only_b]


def render_terminal(comparisons: list[Comparison], console: Console) -> None:
    for comp in comparisons:
        console.rule(f"{comp.a}  →  {comp.b}")
        table = Table(title="composition", title_justify="left")
        for column in ("source", "status", "rows A", "rows B", "share A", "share B", "changes"):
            table.add_column(column, justify="right" if column.startswith(("rows", "share")) else "left")
        colour = {"added": "green", "removed": "red", "changed": "yellow", "same": "dim"}
        for row in comp.composition.sources:
            table.add_row(
                row.name,
                Text(row.status, style=colour[row.status]),
                _rows(row.a_rows),
                _rows(row.b_rows),
                _share(row.a_share),
                _share(row.b_share),
                "; ".join(row.changes),
            )
        console.print(table)
        for line in comp.composition.settings:
            console.print(f"  {line}")
        if _no_results(comp):
            console.print(NO_RESULTS)
            continue
        metrics = Table(title="metrics (Δ = B − A; significant when |Δ| > 2·√(seA² + seB²))", title_justify="left")
        for column in ("task", "metric", "A", "B", "Δ", "±2se", "verdict"):
            metrics.add_column(column, justify="left" if column in ("task", "metric", "verdict") else "right")
        for row in comp.metrics.rows:
            style = "green" if row.direction == "better" else "red" if row.direction == "worse" else ""
            style = f"bold {style}" if row.significant else style
            warn = " ⚠" if row.incomparable else ""
            metrics.add_row(
                row.task + (" (group)" if row.is_group else ""),
                row.metric,
                _num(row.a),
                _num(row.b),
                Text(f"{row.delta:+.4g}", style=style),
                _num(2 * row.se_delta) if row.se_delta else "—",
                verdict(row) + warn,
            )
        if comp.metrics.rows:  # with results on one side only, the lists below say which
            console.print(metrics)
        m = comp.metrics
        if mean := mean_sentence(m):
            console.print(mean)
        for line in _only_lines(comp):
            console.print(line)
        for warning in m.warnings:
            console.print(Text(f"warning: {warning}", style="yellow"))


def _cell(text: str) -> str:
    """Text for a Markdown table cell: a `|` (a drop pattern's `(chatgpt|openai)`) would end the cell."""
    return text.replace("|", "\\|")


def render_markdown(comparisons: list[Comparison]) -> str:
    out: list[str] = []
    for comp in comparisons:
        out += [
            f"## `{comp.a}` → `{comp.b}`",
            "",
            "### Composition",
            "",
            "| source | status | rows A | rows B | share A | share B | changes |",
            "|---|---|---:|---:|---:|---:|---|",
        ]
        for r in comp.composition.sources:
            out.append(
                f"| {_cell(r.name)} | {r.status} | {_rows(r.a_rows)} | {_rows(r.b_rows)} | {_share(r.a_share)} | "
                f"{_share(r.b_share)} | {_cell('; '.join(r.changes))} |"
            )
        out += [""] + [f"- {line}" for line in comp.composition.settings]
        if _no_results(comp):
            out += ["", "### Metrics", "", NO_RESULTS, ""]
            continue
        out += ["", "### Metrics", ""]
        if comp.metrics.rows:
            out += ["| task | metric | A | B | Δ | ±2se | verdict |", "|---|---|---:|---:|---:|---:|---|"]
        for r in comp.metrics.rows:
            delta = f"**{r.delta:+.4g}**" if r.significant else f"{r.delta:+.4g}"
            out.append(
                f"| {_cell(r.task)}{' (group)' if r.is_group else ''} | {_cell(r.metric)} | {_num(r.a)} | "
                f"{_num(r.b)} | {delta} | {_num(2 * r.se_delta) if r.se_delta else '—'} | {verdict(r)}"
                f"{' ⚠ not comparable' if r.incomparable else ''} |"
            )
        m = comp.metrics
        if mean := mean_sentence(m):
            out += ["", mean[0].upper() + mean[1:] + "."]
        out += [f"- {line}" for line in _only_lines(comp)]
        out += [f"> ⚠ {w}" for w in m.warnings] + [""]
    return "\n".join(out)


def render_json(comparisons: list[Comparison]) -> str:
    return json.dumps([c.to_json() for c in comparisons], indent=2, default=str) + "\n"


def delta_chart_svg(comp: Comparison) -> str:
    """Horizontal bars of Δ per task/metric with ±2·se error bars; colour by direction, faded when n.s."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rows = comp.metrics.rows
    # in percentage points where the scale is known, so a 0-1 accuracy's bar is not a sliver beside a win rate's
    scales = [1.0 if r.unit is None else UNITS[r.unit] for r in rows]
    mixed = any(r.unit is None for r in rows) and any(r.unit is not None for r in rows)
    labels = [f"{r.task} · {r.metric}" + (" (own units)" if mixed and r.unit is None else "") for r in rows]
    figure, axis = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.4))
    colours = [
        "#2e7d32" if r.direction == "better" else "#c62828" if r.direction == "worse" else "#757575" for r in rows
    ]
    errors = [2 * r.se_delta * scale if r.se_delta else 0 for r, scale in zip(rows, scales, strict=True)]
    deltas = [r.delta * scale for r, scale in zip(rows, scales, strict=True)]
    bars = axis.barh(range(len(rows)), deltas, xerr=errors, color=colours, capsize=3)
    for bar, row in zip(bars, rows, strict=True):
        bar.set_alpha(1.0 if row.significant else 0.45)
        bar.set_gid(f"bar-{row.task}-{row.metric}")
    axis.set_yticks(range(len(rows)), labels)
    axis.axvline(0, color="black", linewidth=0.8)
    axis.invert_yaxis()
    unit = "percentage points" if all(r.unit for r in rows) else "points where the scale is known" if mixed else ""
    axis.set_xlabel("Δ (B − A)" + (f" in {unit}" if unit else "") + ", error bars ±2·se")
    axis.set_title(f"{comp.b} vs {comp.a}")
    figure.tight_layout()
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg")
    plt.close(figure)
    svg = buffer.getvalue()
    return svg[svg.index("<svg") :]


def render_html(comparisons: list[Comparison]) -> str:
    sections = []
    for i, comp in enumerate(comparisons):
        composition = html_table(
            f"composition-{i}",
            ["source", "status", "rows A", "rows B", "share A", "share B", "changes"],
            [
                [
                    r.name,
                    r.status,
                    _rows(r.a_rows),
                    _rows(r.b_rows),
                    _share(r.a_share),
                    _share(r.b_share),
                    "; ".join(r.changes),
                ]
                for r in comp.composition.sources
            ],
        )
        if _no_results(comp):
            metrics = f"<p>{html.escape(NO_RESULTS)}</p>"
        elif not comp.metrics.rows:  # results on one side only: the list below says which, as in the other formats
            metrics = ""
        else:
            metrics = html_table(
                f"metrics-{i}",
                ["task", "metric", "A", "B", "Δ", "±2se", "verdict"],
                [
                    [
                        r.task,
                        r.metric,
                        _num(r.a),
                        _num(r.b),
                        f"{r.delta:+.4g}",
                        _num(2 * r.se_delta) if r.se_delta else "—",
                        verdict(r),
                    ]
                    for r in comp.metrics.rows
                ],
            )
        chart = delta_chart_svg(comp) if comp.metrics.rows else "<p>No metric in common.</p>"
        settings = "".join(f"<li>{html.escape(s)}</li>" for s in comp.composition.settings)
        warnings = "".join(f"<li>{html.escape(line)}</li>" for line in _only_lines(comp))
        warnings += "".join(f'<li class="warn">{html.escape(w)}</li>' for w in comp.metrics.warnings)
        mean = mean_sentence(comp.metrics)
        sections.append(
            f"<section><h2>{html.escape(comp.a)} → {html.escape(comp.b)}</h2>"
            f'<figure id="delta-chart-{i}">{chart}</figure>'
            f"<h3>Composition</h3>{composition}<ul>{settings}</ul>"
            f"<h3>Metrics</h3>{metrics}"
            + (f"<p>{html.escape(mean)}</p>" if mean else "")
            + f"<ul>{warnings}</ul></section>"
        )
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;"
        "margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}"
        ".warn{color:#a15c00}figure{margin:0}"
    )
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>mixer diff</title>'
        f"<style>{style}</style></head><body><h1>mixer diff</h1>{''.join(sections)}</body></html>\n"
    )
