# SPDX-License-Identifier: Apache-2.0
"""The CPU panel of the live view, rendered from a recorded capture into a recording Console."""

from __future__ import annotations

import io

from cpu_data import recorded
from rich.console import Console, RenderableType

from cniprof.analysis.cpu import analyze_cpu
from cniprof.ui.cpu_panel import render_cpu_panel
from cniprof.ui.live import LiveView, render_live


def render(renderable: RenderableType, width: int = 120) -> str:
    console = Console(record=True, width=width, color_system=None, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def test_panel_shows_top_components_and_softirq() -> None:
    text = render(render_cpu_panel(analyze_cpu(recorded()["cpu"])))
    assert "top components" in text and "softirq per CPU" in text and "NET_RX" in text
    assert "tcp" in text and "socket copy" in text and "more" in text
    assert "datapath" in text and "saturated" in text
    assert all(len(line) <= 120 for line in text.splitlines())


def test_panel_fits_80_columns() -> None:
    text = render(render_cpu_panel(analyze_cpu(recorded()["cpu"])), width=80)
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "tcp" in text and "NET_RX" in text
    assert "…" not in text  # nothing cropped: the tables stack instead of squeezing


def test_saturation_finding_is_shown() -> None:
    snap = {"elapsed_s": 1.0, "cpus": [0, 1], "freq_hz": 1000, "stacks": [["net_rx_action"], ["default_idle"]],
            "samples": [{"tgid": 5, "comm": "iperf3", "cpu": 0, "softirq": "NET_RX", "kstack": 0, "ustack": None,
                         "count": 1000, "period_ns": 10**9},
                        {"tgid": 0, "comm": "swapper/1", "cpu": 1, "softirq": None, "kstack": 1, "ustack": None,
                         "count": 1000, "period_ns": 10**9}],
            "softirq": [{"cpu": 0, "vec": 3, "name": "NET_RX", "count": 9, "time_ns": 970_000_000}]}
    text = render(render_cpu_panel(analyze_cpu(snap)))
    assert "softirq saturation: CPU 0 (97 %)" in text and "CPU 1 had idle time" in text


def test_live_view_carries_the_panel() -> None:
    assert "CPU sampler starting" in render(render_cpu_panel(None))
    panel = render_cpu_panel(analyze_cpu(recorded()["cpu"]))
    assert "top components" in render(render_live("t", None, cpu=panel))
    view = LiveView("t", total_s=2)
    view.cpu = panel
    view.update(None, progress=1.0)
    assert "top components" in render(view.renderable)
    assert "top components" not in render(render_live("t", None))
