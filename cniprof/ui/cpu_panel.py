# SPDX-License-Identifier: Apache-2.0
"""The CPU panel of the live view and of the final report: top components and softirq time per CPU.

A pure function of a CpuAnalysis (cniprof.analysis.cpu), like the other renderables, so tests render it into a
recording Console. It answers the two questions a user has while traffic flows: which layer is burning the CPU,
and is one CPU pinned in NET_RX softirq while another idles.
"""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from cniprof.analysis.cpu import SATURATION_PCT, CpuAnalysis
from cniprof.ui.tables import fmt_pct, fmt_us, share_bar

TOP = 8
BAR = 10
SIDE_BY_SIDE_MIN = 100


def _ms(x: Any) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "—"
    return "—" if math.isnan(v) else f"{v:,.0f}"


def components_table(cpu: CpuAnalysis, top: int = TOP) -> Table:
    t = Table(title="top components (busy CPU)", title_justify="left", box=None, pad_edge=False,
              show_edge=False, padding=(0, 1))
    t.add_column("component", no_wrap=True)
    t.add_column("share", no_wrap=True, min_width=BAR)
    t.add_column("%", justify="right", no_wrap=True)
    t.add_column("ms", justify="right", no_wrap=True)
    comps = cpu.components
    per_pkt = bool(comps["us_per_pkt"].notna().any())  # only once the hop counts are joined (final report)
    if per_pkt:
        t.add_column("µs/pkt", justify="right", no_wrap=True)
    for _, r in comps.head(top).iterrows():
        cells = [Text(str(r["component"]), style="" if r["datapath"] else "dim"), share_bar(r["share_pct"], BAR),
                 fmt_pct(r["share_pct"]), _ms(r["cpu_ms"])]
        t.add_row(*cells, *([fmt_us(r["us_per_pkt"]) if r["datapath"] else ""] if per_pkt else []))
    if len(comps) > top:
        rest = comps.iloc[top:]
        t.add_row(Text(f"{len(rest)} more", style="dim"), "", fmt_pct(rest["share_pct"].sum()),
                  _ms(rest["cpu_ms"].sum()), *([""] if per_pkt else []))
    return t


def softirq_table(cpu: CpuAnalysis) -> Table:
    t = Table(title="softirq per CPU (% of wall time)", title_justify="left", box=None, pad_edge=False,
              show_edge=False, padding=(0, 1))
    t.add_column("CPU", justify="right", no_wrap=True)
    t.add_column("NET_RX", no_wrap=True, min_width=BAR)
    t.add_column("", justify="right", no_wrap=True)
    t.add_column("NET_TX", justify="right", no_wrap=True)
    t.add_column("idle", justify="right", no_wrap=True)
    for _, r in cpu.softirq.iterrows():
        hot = int(r["cpu"]) in cpu.saturated_cpus
        style = "bold red" if hot else ""
        t.add_row(Text(str(int(r["cpu"])), style=style), Text(share_bar(r["net_rx_pct"], BAR), style=style),
                  Text(fmt_pct(r["net_rx_pct"]), style=style), fmt_pct(r["net_tx_pct"]), fmt_pct(r["idle_pct"]))
    return t


class _SideBySide:
    """Two tables side by side when the console is wide enough, one above the other otherwise (an 80-column
    terminal would crop the columns)."""

    def __init__(self, left: RenderableType, right: RenderableType, min_width: int = SIDE_BY_SIDE_MIN) -> None:
        self.left, self.right, self.min_width = left, right, min_width

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if options.max_width >= self.min_width:
            grid = Table.grid(padding=(0, 4))
            grid.add_column()
            grid.add_column()
            grid.add_row(self.left, self.right)
            yield grid
        else:
            yield self.left
            yield Text("")
            yield self.right


def render_cpu_panel(cpu: CpuAnalysis | None) -> RenderableType:
    """Both tables, the datapath share in the title, saturated CPUs and findings underneath."""
    if cpu is None:
        return Panel(Text("CPU sampler starting…", style="dim"), title="CPU", title_align="left")
    s = cpu.summary
    parts: list[RenderableType] = [_SideBySide(components_table(cpu), softirq_table(cpu))]
    saturated = ", ".join(f"CPU {c}" for c in cpu.saturated_cpus) or "none"
    parts.append(Text(f"saturated (≥{SATURATION_PCT:.0f}% of a CPU in NET softirq): {saturated}",
                      style="bold red" if cpu.saturated_cpus else "dim"))
    for f in cpu.findings:
        parts.append(Text(f"⚠ {f.message}", style="bold yellow"))
    title = (f"CPU · {s.get('samples', 0):,} samples at {s.get('freq_hz')} Hz · datapath "
             f"{fmt_pct(s.get('datapath_pct'))} of busy CPU")
    return Panel(Group(*parts), title=title, title_align="left")
