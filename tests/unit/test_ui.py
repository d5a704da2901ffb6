# SPDX-License-Identifier: Apache-2.0
"""The live view and the final table, rendered into a recording Console at a fixed width."""

from __future__ import annotations

import io
import json
import math
import re
import time
from pathlib import Path

import expect
import pytest
from rich.console import Console, RenderableType

from cniprof.analysis.summary import Analysis, analyze
from cniprof.ui.live import LiveView, render_final_table, render_live
from cniprof.ui.tables import fmt_bps, fmt_count, fmt_pct, fmt_us, share_bar

DATA = Path(__file__).parent / "data"
FWD, REV = "pod-a→pod-c", "pod-c→pod-a"
WIDTH = 120


@pytest.fixture
def analysis() -> Analysis:
    return analyze(json.loads((DATA / "flannel_cross_node.json").read_text()))


def recording_console() -> Console:
    return Console(record=True, width=WIDTH, color_system=None, file=io.StringIO())


def render(renderable: RenderableType) -> str:
    console = recording_console()
    console.print(renderable)
    return console.export_text()


def assert_fits(text: str) -> None:
    """Nothing wider than the console, and no table cropped (every table line ends with its right border)."""
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= WIDTH
    for line in lines:
        if line[:1] in "┏┃┡│└":
            assert line.rstrip()[-1] in "┓┃┩│┘", line


def test_final_table_per_direction(analysis: Analysis) -> None:
    text = render(render_final_table(analysis, title="flannel vxlan cross-node", throughput_bps=9.41e9))
    assert_fits(text)
    assert "flannel vxlan cross-node" in text and "9.41 Gbit/s" in text
    assert text.index(FWD) < text.index(REV)
    for hop in (
        "node1 pod-a eth0 → node1 veth-pod-a",
        "node1 flannel.1 → node1 eth0",
        "node2 eth0 rx → receive",
        "node2 pod-c eth0 → node2 pod-c socket",
        "node2 pod-c eth0 → node2 veth-pod-c",
    ):
        assert hop in text, hop
    assert "vxlan encap" in text and "unexpected" in text
    assert "1,000" in text  # packets of the first forward hop


def test_final_table_reconciles(analysis: Analysis) -> None:
    """The reconciliation line of each direction, its numbers checked against the raw snapshot (expect.py)."""
    snap = json.loads((DATA / "flannel_cross_node.json").read_text())
    text = render(render_final_table(analysis))
    number = r"([\d,.]+)"
    for d, label in enumerate((FWD, REV)):
        line = re.search(rf"end-to-end mean {number} µs \(p50 {number}, p99 {number}\) · Σ hop means {number} µs",
                         text[text.index(label):])
        assert line, label
        mean, p50, p99, hop_sum = (float(g.replace(",", "")) for g in line.groups())
        e2e = expect.e2e(snap, d)
        assert mean == pytest.approx(expect.mean_us(e2e), abs=0.05)  # printed with one decimal from 10 us
        assert hop_sum == pytest.approx(expect.hop_mean_sum_us(snap, d), abs=0.05)
        for p, shown in ((50, p50), (99, p99)):
            low, high = expect.percentile_range_us(e2e["buckets"], p)
            assert low - 0.05 <= shown <= high + 0.05, (label, p, shown, low, high)
    assert "e2e mean µs" in text and "Σ hop means µs" in text and "unattributed" in text
    assert "12/12" in text  # expected hops inside the e2e time that were seen


def test_final_table_drops_and_counters(analysis: Analysis) -> None:
    text = render(render_final_table(analysis))
    assert "node1 eth0 queue" in text and "NOT_SPECIFIED" in text and "TCP_OLD_DATA" in text
    assert "stale 2" in text and "lost+stale 2" in text
    assert "started 1,401" in text


def test_final_table_without_drops(analysis: Analysis) -> None:
    empty = type(analysis)(**{**analysis.__dict__, "drops": analysis.drops.head(0)})
    assert "drops: none counted" in render(render_final_table(empty))


def test_live_frame(analysis: Analysis) -> None:
    text = render(render_live("flannel vxlan", analysis, progress=(4.0, 10.0), throughput_bps=9.41e9))
    assert_fits(text)
    assert "4 s / 10 s" in text and "throughput 9.41 Gbit/s" in text
    assert FWD in text and REV in text
    assert "p50 µs" in text and "p99 µs" in text and "share of e2e" in text
    fwd = analysis.hops_for(FWD)
    encap = fwd[fwd.role == "vxlan encap"].iloc[0]
    assert fmt_pct(encap.share_pct) in text
    assert "stale 2" in text


def test_live_frame_from_rows_and_dataframe(analysis: Analysis) -> None:
    rows = analysis.hops.to_dict("records")
    from_rows = render(render_live("t", rows, progress=(1, 2), counters={"started": 5}))
    from_df = render(render_live("t", analysis.hops, progress=(1, 2), counters={"started": 5}))
    assert from_rows == from_df
    assert "node1 flannel.1 → node1 eth0" in from_rows and "started 5" in from_rows


def test_live_frame_before_any_data() -> None:
    text = render(render_live("waiting", None, progress=None, throughput_bps=None, counters=None))
    assert "no hops observed yet" in text and "throughput —" in text and "no counters" in text


def test_live_view_context_manager(analysis: Analysis) -> None:
    console = recording_console()
    with LiveView("flannel vxlan", total_s=10, console=console) as view:
        view.update(analysis, progress=(3.0, 10.0), throughput_bps=1.5e9)
        view.update(analysis, progress=6.0, throughput_bps=2.5e9)  # elapsed only: total from the constructor
        frame = render(view.renderable)
    assert "6 s / 10 s" in frame and "2.50 Gbit/s" in frame
    assert "6 s / 10 s" in console.export_text()  # the last frame stays on screen


class _CountedDraws:
    """A renderable that counts how often it is drawn."""

    def __init__(self) -> None:
        self.draws = 0

    def __rich_console__(self, console, options):
        self.draws += 1
        yield "counted"


def test_each_update_is_drawn_once_and_nothing_redraws_between_updates() -> None:
    """Drawing a frame costs CPU on the node being measured: once per update, none on a timer in between."""
    console = Console(force_terminal=True, width=WIDTH, color_system=None, file=io.StringIO())
    counted = _CountedDraws()
    with LiveView("t", total_s=10, console=console) as view:
        view.cpu = counted
        view.update(None, progress=1.0)
        assert counted.draws == 1
        time.sleep(1.3)
        assert counted.draws == 1, "redrawn between updates"
        view.update(None, progress=2.0)
        assert counted.draws == 2
    assert counted.draws == 3  # and the last frame once more as the view ends


def test_formatting() -> None:
    assert fmt_bps(9.41e9) == "9.41 Gbit/s" and fmt_bps(850e6) == "850.00 Mbit/s" and fmt_bps(None) == "—"
    assert fmt_us(0.8412) == "0.84" and fmt_us(25.94) == "25.9" and fmt_us(1204.4) == "1,204"
    assert fmt_us(math.nan) == "—" and fmt_count(1000) == "1,000"
    assert fmt_pct(-0.01) == "0.0%" and fmt_pct(46.16) == "46.2%" and fmt_pct(None) == "—"
    assert share_bar(50) == "████" and share_bar(0) == "" and share_bar(500) == "████████"
