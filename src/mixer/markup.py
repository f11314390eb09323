"""Pieces of the offline HTML reports: tables, and a grouped horizontal bar chart as inline SVG.

The chart is written here rather than drawn with matplotlib because the build report is made on every
build: this renders in microseconds, where importing and driving matplotlib costs over a second per build.
"""

from __future__ import annotations

import html
from typing import Any

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")
BAR = 12
GAP = 8
LABEL_WIDTH = 170
PLOT_WIDTH = 420


def bar_chart(title: str, labels: list[str], series: dict[str, list[float]], value_format: str = "{:,.0f}") -> str:
    """One group of bars per label, one bar per series; bars scale to the largest value."""
    names = list(series)
    largest = max((v for values in series.values() for v in values), default=0) or 1
    group = BAR * len(names) + GAP
    legend_height = 18
    height = 30 + legend_height + group * len(labels)
    width = LABEL_WIDTH + PLOT_WIDTH + 90
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{html.escape(title)}" font-family="sans-serif" font-size="11">',
        f'<text x="4" y="16" font-size="13" font-weight="bold">{html.escape(title)}</text>',
    ]
    for i, name in enumerate(names):
        x = LABEL_WIDTH + i * 110
        parts.append(f'<rect x="{x}" y="24" width="10" height="10" fill="{PALETTE[i % len(PALETTE)]}"/>')
        parts.append(f'<text x="{x + 14}" y="33">{html.escape(name)}</text>')
    top = 30 + legend_height
    for row, label in enumerate(labels):
        y = top + row * group
        parts.append(
            f'<text x="{LABEL_WIDTH - 6}" y="{y + group / 2}" text-anchor="end">{html.escape(str(label))}</text>'
        )
        for i, name in enumerate(names):
            value = series[name][row]
            length = PLOT_WIDTH * value / largest
            by = y + i * BAR
            shown = value_format.format(value)
            parts.append(
                f'<rect x="{LABEL_WIDTH}" y="{by}" width="{length:.1f}" height="{BAR - 2}" '
                f'fill="{PALETTE[i % len(PALETTE)]}"><title>{html.escape(name)}: {shown}</title></rect>'
            )
            parts.append(
                f'<text x="{LABEL_WIDTH + length + 4:.1f}" y="{by + BAR - 3}">{value_format.format(value)}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def html_table(table_id: str, header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
