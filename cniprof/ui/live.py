# SPDX-License-Identifier: Apache-2.0
"""The Rich live view shown while a trace runs, and the final table printed when it ends.

Rendering is a pure function of data (render_live, render_final_table); LiveView only owns the terminal
(rich.live.Live) and redraws the last data it was given. Tests render the pure functions into
Console(record=True, width=120) and read the text back. The view reads analysis results, never BPF maps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Union

import lazy_loader
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from cniprof.analysis.hops import UNASSIGNED
from cniprof.analysis.summary import Analysis
from cniprof.ui.tables import (
    accounting_text,
    counters_text,
    drops_table,
    fmt_bps,
    fmt_pct,
    fmt_us,
    hop_table,
    overhead_text,
    reconciliation_table,
)

if TYPE_CHECKING:
    import pandas as pd
else:  # imported on first use: a command that does not need it does not wait for it
    pd = lazy_loader.load("pandas")

if TYPE_CHECKING:  # annotations are not evaluated at run time, so no typing_extensions dependency
    from typing_extensions import Self

HopsLike = Union["pd.DataFrame", Sequence[Mapping[str, Any]], Analysis, None]  # a string: pandas loads on use


def _hops_df(hops: HopsLike) -> pd.DataFrame | None:
    if hops is None:  # the first frame, drawn before pandas has loaded (cli.trace loads it beside the run)
        return None
    if isinstance(hops, Analysis):
        return hops.hops
    if isinstance(hops, pd.DataFrame):
        return hops
    return pd.DataFrame(list(hops))


def _direction_order(df: pd.DataFrame, analysis: Analysis | None) -> list[str]:
    """Snapshot order when known (forward first), else order of appearance; "unassigned" always last."""
    order = list(analysis.directions) if analysis is not None else []
    if "direction" in df:
        order += [d for d in dict.fromkeys(df["direction"]) if d not in order]
    return [d for d in order if d != UNASSIGNED] + ([UNASSIGNED] if UNASSIGNED in order else [])


def _e2e_line(analysis: Analysis | None, direction: str) -> str:
    if analysis is None:
        return ""
    e = analysis.e2e_for(direction)
    r = analysis.reconciliation_for(direction)
    if not e:
        return ""
    return (
        f"end-to-end mean {fmt_us(e.get('mean_us'))} µs (p50 {fmt_us(e.get('p50_us'))}, "
        f"p99 {fmt_us(e.get('p99_us'))}) · Σ hop means {fmt_us(r.get('hop_mean_sum_us'))} µs · "
        f"unattributed {fmt_pct(r.get('unattributed_pct'))}"
    )


def _hop_tables(
    df: pd.DataFrame | None, analysis: Analysis | None, *, show_p90: bool = False
) -> list[RenderableType]:
    out: list[RenderableType] = []
    if df is None or len(df) == 0:
        return [Text("no hops observed yet", style="dim")]
    for direction in _direction_order(df, analysis):
        rows = df[df["direction"] == direction] if "direction" in df else df
        if len(rows) == 0:
            continue
        caption = _e2e_line(analysis, direction) or None
        out.append(hop_table(rows, title=str(direction), caption=caption, show_p90=show_p90, show_mean=True))
    return out


def _header(title: str, progress: tuple[float, float] | None, throughput_bps: float | None) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(no_wrap=True)
    grid.add_column(no_wrap=True)
    grid.add_column(no_wrap=True)
    grid.add_column(no_wrap=True)
    if progress is not None:
        elapsed, total = float(progress[0]), float(progress[1])
        bar: RenderableType = ProgressBar(total=max(total, 1e-9), completed=min(elapsed, total), width=40)
        when = f"{elapsed:.0f} s / {total:.0f} s"
    else:
        bar, when = Text(""), ""
    grid.add_row(Text(title, style="bold"), bar, when, f"throughput {fmt_bps(throughput_bps)}")
    return grid


def render_live(
    title: str,
    hops: HopsLike,
    progress: tuple[float, float] | None = None,
    throughput_bps: float | None = None,
    counters: Mapping[str, int] | None = None,
    cpu: RenderableType | None = None,
    overhead: Mapping[str, Any] | None = None,
) -> RenderableType:
    """One frame of the live view: header (progress bar, throughput so far), per-direction hops, counters, and
    the CPU panel (cniprof.ui.cpu_panel) when CPU sampling runs.

    `hops` is the hop table (DataFrame or its rows) or an Analysis, which also adds the end-to-end line.
    """
    analysis = hops if isinstance(hops, Analysis) else None
    if counters is None and analysis is not None:
        counters = analysis.counters
    parts: list[RenderableType] = [_header(title, progress, throughput_bps)]
    if overhead:
        parts.append(Text(overhead_text(overhead), style="dim"))
    parts += _hop_tables(_hops_df(hops), analysis)
    parts.append(counters_text(counters))
    if cpu is not None:
        parts.append(cpu)
    return Group(*parts)


def render_final_table(
    analysis: Analysis,
    *,
    title: str | None = None,
    throughput_bps: float | None = None,
    show_p90: bool = False,
) -> RenderableType:
    """The end-of-run report: every direction's hop table, end-to-end mean beside the sum of hop means, drops,
    and the lost/stale counters that say how much the numbers can be trusted. p90 is opt-in (it is in the
    exports) because it makes the table too wide for 120 columns."""
    parts: list[RenderableType] = []
    if title:
        parts.append(Text(title, style="bold"))
    if throughput_bps is not None:
        parts.append(Text(f"throughput {fmt_bps(throughput_bps)}"))
    parts += _hop_tables(analysis.hops, analysis, show_p90=show_p90)
    parts.append(reconciliation_table(analysis.reconciliation, analysis.e2e))
    parts.append(drops_table(analysis.drops))
    if analysis.accounting is not None:
        parts.append(accounting_text(analysis.accounting))
    parts.append(counters_text(analysis.counters))
    return Group(*parts)


class LiveView:
    """Context manager around rich.live.Live that draws each update once, when it arrives.

    with LiveView("flannel vxlan · pod-a→pod-c", total_s=30) as view:
        view.update(analysis, progress=(elapsed, 30), throughput_bps=bps)

    No timer redraws between updates: drawing a ~20-row frame takes ~15-30 ms of CPU on the node being measured,
    so the caller's update period is the view's refresh period (cli.trace: LIVE_INTERVAL_S).
    """

    def __init__(
        self,
        title: str,
        total_s: float | None = None,
        *,
        console: Console | None = None,
        transient: bool = False,
    ) -> None:
        self.title = title
        self.total_s = total_s
        self.console = console
        self.transient = transient
        self._frame: RenderableType = render_live(title, None, (0.0, total_s) if total_s else None)
        self._live: Live | None = None
        self.cpu: RenderableType | None = None  # the CPU panel, set by the caller; shown from the next update

    @property
    def renderable(self) -> RenderableType:
        """The frame currently shown (tests render it)."""
        return self._frame

    def __enter__(self) -> Self:
        self._live = Live(
            self._frame,
            console=self.console,
            auto_refresh=False,
            transient=self.transient,
        )
        self._live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.__exit__(exc_type, exc, tb)
            self._live = None

    def update(
        self,
        hops: HopsLike,
        progress: tuple[float, float] | float | None = None,
        throughput_bps: float | None = None,
        counters: Mapping[str, int] | None = None,
        overhead: Mapping[str, Any] | None = None,
    ) -> None:
        """Replace the data shown; progress is (elapsed_s, total_s), or elapsed_s alone with the constructor's
        total_s."""
        if isinstance(progress, (int, float)):
            progress = (float(progress), float(self.total_s or progress))
        self._frame = render_live(self.title, hops, progress, throughput_bps, counters, self.cpu, overhead)
        if self._live is not None:
            self._live.update(self._frame, refresh=True)
