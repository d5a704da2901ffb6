# SPDX-License-Identifier: Apache-2.0
"""The comparison table of `cniprof trace --cni A,B,...` as one Rich table: metrics as rows, models as columns.

A cell with a percentage of host reads "value (pct)", so a model's cost relative to the wire sits beside the
number it comes from; models that were not traced are listed under the table with their reason.
"""

from __future__ import annotations

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from cniprof.analysis.compare import Comparison, Row
from cniprof.ui.tables import DASH, fmt_count, fmt_us

SECTION_TITLES = {"throughput": "", "end-to-end": "end to end", "hop": "per hop (mean µs)"}


def _cell(row: Row, model: str) -> str:
    value = row.values.get(model)
    if value is None:
        return DASH
    if not row.unit:
        text = fmt_count(value)
    else:
        text = f"{value:.2f}" if row.unit == "Gbit/s" else fmt_us(value)
    pct = row.pct.get(model)
    return f"{text} ({pct:.0f}%)" if pct is not None else text


def _label(row: Row) -> str:
    """Hop rows are bare roles (the section says µs); other rows carry their unit."""
    return f"{row.metric} ({row.unit})" if row.unit and row.section != "hop" else row.metric


def render_comparison(cmp: Comparison, title: str | None = None) -> RenderableType:
    t = Table(box=box.SIMPLE_HEAD, title=title, title_justify="left", expand=False)
    t.add_column("", no_wrap=True)
    for model in cmp.models:
        t.add_column(model, justify="right", no_wrap=True)
    section = None
    for row in cmp.rows:
        if row.section != section:
            section = row.section
            heading = SECTION_TITLES.get(section, section)
            if heading:
                t.add_row(Text(heading, style="bold"), *([""] * len(cmp.models)))
        t.add_row(("  " if SECTION_TITLES.get(row.section) else "") + _label(row), *(_cell(row, m) for m in cmp.models))
    parts: list[RenderableType] = [t]
    if cmp.baseline:
        parts.append(Text(f"(n%) = percentage of {cmp.baseline}'s value", style="dim"))
    dirs = sorted(set(cmp.directions.values()))
    if dirs:
        parts.append(Text(f"direction: {', '.join(dirs)} (the generator's sending direction)", style="dim"))
    for s in cmp.skipped:
        parts.append(Text(f"skipped {s.spec}: {s.reason}"))
    return Group(*parts)
