# SPDX-License-Identifier: Apache-2.0
"""Rich renderables for the hop, drops, reconciliation and counter tables.

Pure functions from analysis data (DataFrames / dicts) to Rich objects, shared by the live view and the final
report, so that tests can render them into a recording Console at a fixed width and read the text back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import lazy_loader
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from cniprof.analysis.accounting import CATEGORIES, Accounting
from cniprof.analysis.hops import UNEXPECTED_ROLE

if TYPE_CHECKING:
    import pandas as pd
else:  # imported on first use: a command that does not need it does not wait for it
    pd = lazy_loader.load("pandas")

DASH = "—"
BAR_WIDTH = 8
ROLE_MAX_WIDTH = 14


def _nan(x: Any) -> bool:
    return x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x))


def fmt_us(x: Any) -> str:
    """Microseconds with precision that suits the magnitude ("0.84", "12.3", "1,204")."""
    if _nan(x):
        return DASH
    x = float(x)
    if abs(x) < 10:
        return f"{x:.2f}"
    if abs(x) < 1000:
        return f"{x:.1f}"
    return f"{x:,.0f}"


def fmt_pct(x: Any) -> str:
    if _nan(x):
        return DASH
    x = float(x)
    return "0.0%" if abs(x) < 0.05 else f"{x:.1f}%"  # no "-0.0%"


def fmt_count(x: Any) -> str:
    return DASH if _nan(x) else f"{int(x):,}"


def fmt_bps(bps: float | None) -> str:
    """Bits per second in SI units ("9.41 Gbit/s"); a dash when there is no generator."""
    if _nan(bps):
        return DASH
    value = float(bps)  # type: ignore[arg-type]
    for unit, scale in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.0f} bit/s"


def share_bar(pct: Any, width: int = BAR_WIDTH) -> str:
    """A fixed-width text bar for a share of the end-to-end time (capped to the width)."""
    if _nan(pct) or float(pct) <= 0:
        return ""
    n = min(width, max(1, round(float(pct) / 100.0 * width)))
    return "█" * n


def hop_table(
    rows: pd.DataFrame,
    title: str | None = None,
    *,
    show_p90: bool = False,
    show_mean: bool = True,
    caption: str | None = None,
) -> Table:
    """One direction's hops: #, hop, role, packets, p50/p99 (µs), mean, share of end-to-end.

    Unexpected hops are yellow and unobserved expected hops dim, so the eye goes to what deviates from the model.
    """
    table = Table(title=title, caption=caption, title_justify="left", caption_justify="left", expand=False)
    table.add_column("#", justify="right", no_wrap=True)
    # hop names are what the reader scans for: the role column is capped so that it wraps before they do
    table.add_column("hop", overflow="fold")
    table.add_column("role", overflow="fold", max_width=ROLE_MAX_WIDTH)
    table.add_column("packets", justify="right", no_wrap=True)
    table.add_column("p50 µs", justify="right", no_wrap=True)
    if show_p90:
        table.add_column("p90 µs", justify="right", no_wrap=True)
    table.add_column("p99 µs", justify="right", no_wrap=True)
    if show_mean:
        table.add_column("mean µs", justify="right", no_wrap=True)
    table.add_column("share of e2e", no_wrap=True)
    for r in rows.to_dict("records"):
        cells = [
            str(r.get("seq", "")),
            str(r.get("hop", "")),
            str(r.get("role", "")),
            fmt_count(r.get("packets")),
            fmt_us(r.get("p50_us")),
        ]
        if show_p90:
            cells.append(fmt_us(r.get("p90_us")))
        cells.append(fmt_us(r.get("p99_us")))
        if show_mean:
            cells.append(fmt_us(r.get("mean_us")))
        cells.append(f"{fmt_pct(r.get('share_pct')):>6} {share_bar(r.get('share_pct'))}")
        style = None
        if r.get("role") == UNEXPECTED_ROLE or r.get("expected") is False:
            style = "yellow"
        elif not r.get("packets"):
            style = "dim"
        table.add_row(*cells, style=style)
    return table


def reconciliation_table(recon: pd.DataFrame, e2e: pd.DataFrame | None = None) -> Table:
    """Per direction, end-to-end mean beside the sum of the expected hops' means, and what is unattributed."""
    table = Table(title="end-to-end vs hops", title_justify="left")
    table.add_column("direction", no_wrap=True)
    table.add_column("packets", justify="right", no_wrap=True)
    table.add_column("e2e mean µs", justify="right", no_wrap=True)
    table.add_column("e2e p50 µs", justify="right", no_wrap=True)
    table.add_column("e2e p99 µs", justify="right", no_wrap=True)
    table.add_column("Σ hop means µs", justify="right", no_wrap=True)
    table.add_column("unattributed", justify="right", no_wrap=True)
    table.add_column("hops seen", justify="right", no_wrap=True)
    e2e_by_dir = {r["direction"]: r for r in e2e.to_dict("records")} if e2e is not None else {}
    for r in recon.to_dict("records"):
        e = e2e_by_dir.get(r["direction"], {})
        table.add_row(
            str(r["direction"]),
            fmt_count(e.get("packets")),
            fmt_us(r.get("e2e_mean_us")),
            fmt_us(e.get("p50_us")),
            fmt_us(e.get("p99_us")),
            fmt_us(r.get("hop_mean_sum_us")),
            fmt_pct(r.get("unattributed_pct")),
            f"{r.get('hops_observed', 0)}/{r.get('hops_expected', 0)}",
        )
    return table


def drops_table(drops: pd.DataFrame) -> Table | Text:
    """Drops per point and kernel reason; a plain line when there were none (absence is a result too)."""
    if drops is None or len(drops) == 0:
        return Text("drops: none counted", style="green")
    table = Table(title="drops", title_justify="left")
    table.add_column("point", overflow="fold")
    table.add_column("reason", overflow="fold")
    table.add_column("count", justify="right", no_wrap=True)
    for r in drops.to_dict("records"):
        table.add_row(str(r.get("point", "")), str(r.get("reason", "")), fmt_count(r.get("count")))
    return table


class Flow:
    """Items joined by a separator that wrap only between items, so "stale 2" never splits across lines."""

    def __init__(self, items: list[Text], sep: str = " · ") -> None:
        self.items = items
        self.sep = sep

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        line = Text()
        for item in self.items:
            if line and len(line) + len(self.sep) + len(item) > options.max_width:
                yield line
                line = Text()
            if line:
                line.append(self.sep)
            line.append_text(item)
        if line:
            yield line

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        widest = max((len(i) for i in self.items), default=0)
        total = sum(len(i) for i in self.items) + len(self.sep) * max(len(self.items) - 1, 0)
        return Measurement(min(widest, options.max_width), min(total, options.max_width))


def counters_text(counters: Mapping[str, int] | None) -> Flow:
    """The probe counters on as many lines as needed; lost and stale are highlighted when non-zero because they
    bias the results."""
    if not counters:
        return Flow([Text("probe: no counters", style="dim")])
    items = []
    for i, (key, value) in enumerate(counters.items()):
        style = "bold red" if key in ("lost", "stale") and value else ""
        items.append(Text(f"{'probe: ' if i == 0 else ''}{key} {int(value):,}", style=style))
    lost = sum(int(counters.get(k, 0)) for k in ("lost", "stale"))
    items.append(Text(f"lost+stale {lost:,}", style="bold red" if lost else "dim"))
    return Flow(items)


def accounting_text(acc: Accounting) -> Flow:
    """Where every tracked packet went: started = the categories (cniprof.analysis.accounting), then each category
    other than delivery with the points it happened at (the top three). Anything unexplained is highlighted."""
    items = [Text(f"accounting: started {acc.started:,} =")]
    items.append(Text(f"delivered {acc.delivered:,} (copied {acc.copied:,}, freed after the end "
                      f"{acc.freed_after_end:,}, ended there {acc.path_end:,})"))
    for c in CATEGORIES[1:]:
        n = acc.category(c)
        where = acc.where.get(c) or ()
        at = f" ({', '.join(f'{p} {k:,}' for p, k in where[:3])}{' …' if len(where) > 3 else ''})" if n and where else ""
        items.append(Text(f"+ {c.replace('_', ' ')} {n:,}{at}", style="bold red" if c == "dropped" and n else ""))
    bad = acc.unexplained != 0
    items.append(Text(f"unexplained {acc.unexplained:,}" + ("" if acc.complete else " (older probe)"),
                      style="bold red" if bad else "dim"))
    return Flow(items, sep=" ")


def overhead_text(overhead: Mapping[str, Any] | None) -> str:
    """One line: attach time, coverage (share of the time the programs were attached), the probe's measured own
    cost against the budget. Empty without an overhead block (an export from before it existed)."""
    if not overhead:
        return ""
    parts = []
    if overhead.get("attach_s") is not None:
        parts.append(f"attached {overhead['attach_s']:.2f} s after start")
    if overhead.get("coverage") is not None:
        parts.append(f"coverage {100 * overhead['coverage']:.0f} % of the time"
                     + (" (full: exact counts)" if overhead.get("mode") == "full" else ""))
    own = overhead.get("own_cost_pct")
    if overhead.get("mode") == "agents":
        parts.append("own cost not measured: each node agent traces its node whole")
        return "overhead: " + " · ".join(parts)
    parts.append(f"own cost {'n/a' if own is None else f'{own:.2f} %'} of the node's kernel CPU "
                 f"(budget {overhead.get('budget_pct', 0):g} %)")
    progs = overhead.get("programs") or {}
    ns = [p["ns_per_event"] for p in progs.values() if p.get("ns_per_event") is not None]
    if ns and overhead.get("events"):
        body = sum(p["run_time_ns"] for p in progs.values()) / overhead["events"]
        parts.append(f"{body:.0f} ns/event in programs + {overhead.get('dispatch_ns') or 0:.0f} dispatch")
    if overhead.get("process_cpu_s") is not None and overhead.get("elapsed_s"):
        per_s = 1e3 * overhead["process_cpu_s"] / overhead["elapsed_s"]
        parts.append(f"cniprof process {per_s:.1f} ms CPU/s (view, reads, generators; not budgeted)")
    return "overhead: " + " · ".join(parts)
