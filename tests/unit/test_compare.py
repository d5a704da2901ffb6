# SPDX-License-Identifier: Apache-2.0
"""The comparison table (cniprof.analysis.compare and its Rich rendering) on a recorded comparison run: flannel:vxlan,
calico:bgp and host:network traced with iperf3 on this kernel (calico:ipip and bridge were skipped)."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from cniprof.analysis.compare import Entry, Skipped, _merge_order, compare, hop_means
from cniprof.analysis.summary import analyze
from cniprof.cli import trace_compare
from cniprof.errors import UsageError
from cniprof.ui.compare_table import render_comparison

DATA = Path(__file__).parent / "data" / "recorded_compare_iperf3.json.gz"
SKIPPED = (Skipped("calico:ipip", "calico:ipip needs IPIP tunnels (tunl0), but this kernel was built without "
                                  "CONFIG_NET_IPIP"),
           Skipped("bridge:bridge", "bridge:bridge has no cross-node path; it supports: same-node, pod-to-host"))


@pytest.fixture(scope="module")
def entries() -> list[Entry]:
    with gzip.open(DATA, "rt") as f:
        recorded = json.load(f)
    return [Entry(m["spec"], analyze(m["snapshot"]), m["throughput_bps"], m["sample_every"])
            for m in recorded["models"]]


def test_rows_and_columns(entries: list[Entry]) -> None:
    cmp = compare(entries, SKIPPED)
    assert cmp.models == ("flannel:vxlan", "calico:bgp", "host:network")
    assert cmp.baseline == "host:network"
    assert [r.metric for r in cmp.rows[:6]] == ["throughput", "packets", "sampled 1 in", "mean", "p50", "p99"]
    assert cmp.skipped == SKIPPED
    assert cmp.directions == {"flannel:vxlan": "pod-a→pod-c", "calico:bgp": "pod-a→pod-c",
                              "host:network": "node1→node2"}


def test_throughput_and_latency_as_percent_of_host(entries: list[Entry]) -> None:
    cmp = compare(entries)
    by = {e.spec: e for e in entries}
    tp = cmp.row("throughput")
    for spec, e in by.items():
        assert tp.values[spec] == pytest.approx(e.throughput_bps / 1e9)
        assert tp.pct[spec] == pytest.approx(100 * e.throughput_bps / by["host:network"].throughput_bps)
    assert tp.pct["host:network"] == pytest.approx(100.0)
    for stat in ("mean", "p50", "p99"):
        row = cmp.row(stat)
        host = by["host:network"].analysis.e2e_for("node1→node2")[f"{stat}_us"]
        for spec, e in by.items():
            value = e.analysis.e2e_for(e.analysis.forward)[f"{stat}_us"]
            assert row.values[spec] == pytest.approx(value)
            assert row.pct[spec] == pytest.approx(100 * value / host)
    assert cmp.row("packets").pct == {}  # counts are not compared with host
    assert cmp.row("sampled 1 in").values == {s: float(e.sample_every) for s, e in by.items()}


def test_hops_side_by_side_add_up_to_each_models_end_to_end(entries: list[Entry]) -> None:
    cmp = compare(entries)
    hops = [r for r in cmp.rows if r.section == "hop"]
    assert [r.metric for r in hops] == [
        "pod veth xmit + host veth backlog", "bridge input", "ip forward (src node)", "vxlan encap",
        "underlay xmit + underlay backlog", "vxlan decap", "ip forward (dst node)", "bridge xmit",
        "host veth xmit + pod backlog",
    ]
    by_metric = {r.metric: r for r in hops}
    assert by_metric["vxlan encap"].values["calico:bgp"] is None  # no tunnel, no encap
    assert by_metric["bridge input"].values["calico:bgp"] is None  # no bridge
    assert [m for m, r in by_metric.items() if r.values["host:network"] is not None] == [
        "underlay xmit + underlay backlog"]
    assert all(r.pct == {} for r in hops)
    for spec in cmp.models:
        total = sum(r.values[spec] for r in hops if r.values[spec] is not None)
        # every tracked packet's hop times add up to its end-to-end time (ARCHITECTURE.md)
        assert total == pytest.approx(cmp.row("mean").values[spec], rel=1e-3)


def test_without_host_there_are_no_percentages(entries: list[Entry]) -> None:
    cmp = compare(entries[:2])
    assert cmp.baseline is None
    assert all(r.pct == {} for r in cmp.rows)


def test_repeated_roles_are_split_by_side(entries: list[Entry]) -> None:
    keys = [k for k, _ in hop_means(entries[1].analysis)]
    assert keys == ["pod veth xmit + host veth backlog", "ip forward (src node)", "underlay xmit + underlay backlog",
                    "ip forward (dst node)", "host veth xmit + pod backlog"]


def test_merge_order_keeps_each_models_sequence() -> None:
    assert _merge_order([["a", "x", "b"], ["a", "y", "b"], ["c", "a"]]) == ["c", "a", "x", "y", "b"]
    # a model whose first hop is its own: placed just before the first row it shares, not on top
    assert _merge_order([["a", "u", "b"], ["m", "u"], ["u", "z"]]) == ["a", "m", "u", "b", "z"]


def test_csv_is_long_form_with_skipped_models(entries: list[Entry], tmp_path: Path) -> None:
    cmp = compare(entries, SKIPPED)
    path = cmp.to_csv(tmp_path / "compare.csv")
    df = pd.read_csv(path)
    assert list(df.columns) == ["model", "status", "section", "metric", "unit", "value", "pct_of_host", "note"]
    traced = df[df["status"] == "traced"]
    assert len(traced) == 3 * len(cmp.rows)
    row = traced[(traced["model"] == "flannel:vxlan") & (traced["metric"] == "mean")].iloc[0]
    assert row["value"] == pytest.approx(cmp.row("mean").values["flannel:vxlan"])
    assert row["pct_of_host"] == pytest.approx(cmp.row("mean").pct["flannel:vxlan"])
    assert math.isnan(traced[(traced["model"] == "calico:bgp") & (traced["metric"] == "vxlan encap")]["value"].iloc[0])
    skipped = df[df["status"] == "skipped"]
    assert list(skipped["model"]) == ["calico:ipip", "bridge:bridge"]
    assert "CONFIG_NET_IPIP" in skipped["note"].iloc[0]


def test_rendered_table(entries: list[Entry]) -> None:
    console = Console(record=True, width=160)
    console.print(render_comparison(compare(entries, SKIPPED), title="comparison"))
    text = console.export_text()
    header = next(line for line in text.splitlines() if "flannel:vxlan" in line)
    assert header.index("flannel:vxlan") < header.index("calico:bgp") < header.index("host:network")
    tp_line = next(line for line in text.splitlines() if "throughput (Gbit/s)" in line)
    assert tp_line.rstrip().endswith("(100%)")
    assert "vxlan encap" in text and "per hop (mean µs)" in text
    assert "(n%) = percentage of host:network's value" in text
    assert "skipped calico:ipip: calico:ipip needs IPIP tunnels" in text


def test_model_list_parsing() -> None:
    assert [m.spec for m in trace_compare.parse_models("flannel, calico:bgp,host,flannel:vxlan")] == [
        "flannel:vxlan", "calico:bgp", "host:network"]
    with pytest.raises(UsageError, match="unknown CNI 'weave'"):
        trace_compare.parse_models("flannel,weave")
    with pytest.raises(UsageError, match="auto"):
        trace_compare.parse_models("auto,host")
    with pytest.raises(UsageError, match="at least two"):
        trace_compare.parse_models("flannel,flannel:vxlan")
