# SPDX-License-Identifier: Apache-2.0
"""Netfilter cost analysis and table on a recorded NfHookProbe snapshot.

The recording (data/recorded_nf_service_udp23.json): the flannel lab with one kube-proxy ClusterIP service in
front of pod-c and no dummy services; pod-a sent 23 UDP datagrams to the ClusterIP, each from its own socket
(a new connection each), addresses = pod-a, pod-c and the ClusterIP. node1 DNATs in PREROUTING and forwards,
node2 forwards: 23 packets on PREROUTING, FORWARD and POSTROUTING of both nodes, none on INPUT/OUTPUT.
"""

from __future__ import annotations

import copy
import io
import json
import math
from pathlib import Path

import pytest
from rich.console import Console, RenderableType

from cniprof.analysis import nf
from cniprof.analysis.histogram import Histogram
from cniprof.ui.nf_table import render_nf_table

DATA = Path(__file__).parent / "data" / "recorded_nf_service_udp23.json"


@pytest.fixture
def snapshot() -> dict:
    return json.loads(DATA.read_text())


def render(renderable: RenderableType, width: int = 120) -> str:
    console = Console(record=True, width=width, color_system=None, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def test_table_has_every_node_and_hook_in_order(snapshot: dict) -> None:
    t = nf.analyze_nf(snapshot).hooks
    assert list(t.columns) == ["node", "netns", "hook", "packets", "mean_us", "p50_us", "p90_us", "p99_us",
                               "total_ms", "unclosed"]  # nf.csv's columns as the README lists them
    assert list(zip(t["node"], t["hook"])) == [(n, h) for n in ("node1", "node2") for h in nf.HOOK_ORDER]
    crossed = t[t["hook"].isin(["PREROUTING", "FORWARD", "POSTROUTING"])]
    assert (crossed["packets"] == 23).all() and (t["unclosed"] == 0).all()
    idle = t[t["hook"].isin(["INPUT", "OUTPUT"])]
    assert (idle["packets"] == 0).all() and idle["mean_us"].isna().all() and idle["p99_us"].isna().all()


def test_numbers_match_the_histograms(snapshot: dict) -> None:
    a = nf.analyze_nf(snapshot)
    raw = next(h for h in snapshot["hooks"] if (h["node"], h["hook"]) == ("node1", "PREROUTING"))
    row = a.hook("node1", "PREROUTING")
    assert row is not None
    assert row["mean_us"] == pytest.approx(raw["sum_ns"] / raw["count"] / 1e3)
    hist = Histogram.from_entry(raw)
    assert row["p50_us"] == pytest.approx(hist.percentile(50) / 1e3)
    assert row["p99_us"] == pytest.approx(hist.percentile(99) / 1e3)
    assert row["p50_us"] <= row["p99_us"]
    assert row["total_ms"] == pytest.approx(raw["sum_ns"] / 1e6)
    assert a.hook("node3", "PREROUTING") is None


def test_slowest_has_the_highest_mean(snapshot: dict) -> None:
    a = nf.analyze_nf(snapshot)
    rows = a.hooks[a.hooks["packets"] > 0]
    assert a.slowest is not None and a.slowest["mean_us"] == rows["mean_us"].max()
    assert len(a.active) == 6


def test_summary_block_is_json_without_nan(snapshot: dict) -> None:
    s = nf.summary(nf.analyze_nf(snapshot))
    text = json.dumps(s, allow_nan=False)
    assert json.loads(text)["attach"] == "netfilter_link"
    assert s["addresses"] == snapshot["addresses"] and s["packets"] == 6 * 23 and s["unclosed"] == 0
    assert len(s["hooks"]) == 10
    assert next(h for h in s["hooks"] if h["hook"] == "INPUT")["mean_us"] is None
    assert set(s["slowest"]) == {"node", "hook", "packets", "mean_us", "p99_us"}


def test_unclosed_is_carried_and_shown(snapshot: dict) -> None:
    snap = copy.deepcopy(snapshot)
    fwd = next(h for h in snap["hooks"] if (h["node"], h["hook"]) == ("node1", "FORWARD"))
    fwd.update(count=0, sum_ns=0, buckets={}, unclosed=23)  # a DROP rule in FORWARD
    a = nf.analyze_nf(snap)
    row = a.hook("node1", "FORWARD")
    assert row["packets"] == 0 and row["unclosed"] == 23 and math.isnan(row["mean_us"])
    assert len(a.active) == 6  # still listed: packets entered it
    text = render(render_nf_table(a))
    assert "dropped or stolen" in text
    line = next(ln for ln in text.splitlines() if "FORWARD" in ln and "node1" in ln)
    assert line.replace("│", " ").split()[-1] == "23"


def test_rendered_table_lists_active_hooks_only(snapshot: dict) -> None:
    text = render(render_nf_table(nf.analyze_nf(snapshot)))
    assert "netfilter cost per hook" in text and "netfilter_link" in text
    for col in ("node", "hook", "packets", "mean µs", "p50 µs", "p99 µs", "unclosed"):
        assert col in text, col
    assert "INPUT" not in text and "OUTPUT" not in text
    assert text.count("PREROUTING") == 2 and text.count(" 23 ") >= 6
    assert "dropped or stolen" not in text  # the note only when something is unclosed
    assert all(len(line) <= 80 for line in render(render_nf_table(nf.analyze_nf(snapshot)), 80).splitlines())


def test_empty_snapshot_says_so() -> None:
    a = nf.analyze_nf({"attach": "netfilter_link", "addresses": ["10.0.0.1"], "hooks": []})
    assert a.hooks.empty and a.slowest is None and a.active.empty
    assert "no traced packet" in render(render_nf_table(a))
    assert nf.summary(a)["packets"] == 0
