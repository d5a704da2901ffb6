# SPDX-License-Identifier: Apache-2.0
"""CPU analysis on a recorded capture: component shares, softirq per CPU, saturation, the per-hop join."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from cpu_data import TCP_RULES, recorded, traffic_bytes

from cniprof.analysis.cpu import (
    HOP_CPU_COLUMNS,
    analyze_cpu,
    component_table,
    flow_packets,
    hop_cpu,
    samples_table,
    saturation,
    softirq_table,
    with_cpu,
)
from cniprof.analysis.cpu import traffic_bytes as result_bytes
from cniprof.analysis.summary import analyze


@pytest.fixture(scope="module")
def run() -> dict:
    return recorded()


@pytest.fixture(scope="module")
def hops(run) -> pd.DataFrame:
    return analyze(run["hops"]).hops


def test_components_share_busy_time(run) -> None:
    comps = component_table(run["cpu"])
    assert abs(comps["share_pct"].sum() - 100.0) < 1e-9
    assert "idle" not in set(comps["component"])
    assert list(comps["cpu_ms"]) == sorted(comps["cpu_ms"], reverse=True)
    assert {"tcp", "socket copy", "veth", "bridge", "vxlan/tunnel", "ip", "napi/driver"} <= set(comps["component"])
    # time, not sample counts: each sample stands for its period (1/999 s)
    t = samples_table(run["cpu"])
    busy = t[t["component"] != "idle"]
    assert comps["cpu_ms"].sum() == pytest.approx(busy["ns"].sum() / 1e6)
    assert comps["samples"].sum() == busy["samples"].sum()


def test_softirq_table(run) -> None:
    table = softirq_table(run["cpu"])
    assert list(table["cpu"]) == run["cpu"]["cpus"]
    assert (table["net_rx_ms"] > 0).all()
    elapsed_ms = run["cpu"]["elapsed_s"] * 1e3
    assert table["net_rx_pct"].tolist() == pytest.approx((table["net_rx_ms"] / elapsed_ms * 100).tolist())
    assert ((table["busy_pct"] + table["idle_pct"]).round(6) == 100).all()


def _softirq_snapshot(net_rx_ms: dict[int, float], idle: dict[int, int]) -> dict:
    """1 s capture: NET_RX time per CPU; `idle` idle samples (of 1000) per CPU, the rest busy in tcp."""
    samples = []
    for cpu, n in idle.items():
        samples.append({"tgid": 0, "comm": "swapper", "cpu": cpu, "softirq": None, "kstack": 0, "ustack": None,
                        "count": n, "period_ns": n * 1_000_000})
        samples.append({"tgid": 7, "comm": "iperf3", "cpu": cpu, "softirq": "NET_RX", "kstack": 1, "ustack": None,
                        "count": 1000 - n, "period_ns": (1000 - n) * 1_000_000})
    return {"elapsed_s": 1.0, "cpus": sorted(idle), "freq_hz": 1000, "profiler_tgid": 99,
            "stacks": [["default_idle", "do_idle"], ["tcp_v4_rcv", "net_rx_action"]], "samples": samples,
            "softirq": [{"cpu": c, "vec": 3, "name": "NET_RX", "count": 1, "time_ns": int(ms * 1e6)}
                        for c, ms in net_rx_ms.items()]}


def test_saturation_of_one_cpu_beside_an_idle_one() -> None:
    snap = _softirq_snapshot({0: 950.0, 1: 20.0}, {0: 0, 1: 800})
    cpus, findings = saturation(softirq_table(snap))
    assert cpus == [0]
    assert [f.kind for f in findings] == ["softirq_saturation"]
    assert findings[0].data["idle_cpus"] == [1] and "CPU 0 (95 %)" in findings[0].message
    summary = analyze_cpu(snap).summary
    assert summary["saturated_cpus"] == [0] and summary["findings"][0]["kind"] == "softirq_saturation"
    assert summary["softirq"]["0"]["net_rx_pct"] == pytest.approx(95.0)


def test_idle_is_wall_time_minus_busy_samples() -> None:
    """A halted vCPU takes no samples at all: CPU 1 below has 300 ms of busy samples in 1 s and no idle ones."""
    snap = _softirq_snapshot({0: 10.0, 1: 10.0}, {0: 500, 1: 0})
    snap["samples"] = [s for s in snap["samples"] if not (s["cpu"] == 1 and s["tgid"] == 7)]
    snap["samples"].append({"tgid": 7, "comm": "iperf3", "cpu": 1, "softirq": None, "kstack": 1, "ustack": None,
                            "count": 300, "period_ns": 300_000_000})
    table = softirq_table(snap).set_index("cpu")
    assert table.loc[1, "busy_pct"] == pytest.approx(30.0) and table.loc[1, "idle_pct"] == pytest.approx(70.0)
    assert table.loc[0, "idle_pct"] == pytest.approx(50.0)
    s = analyze_cpu(snap).summary
    assert s["idle_pct"] == pytest.approx(60.0) and s["busy_ms"] == pytest.approx(800.0)


def test_saturation_everywhere_and_nowhere() -> None:
    cpus, findings = saturation(softirq_table(_softirq_snapshot({0: 950.0, 1: 930.0}, {0: 0, 1: 10})))
    assert cpus == [0, 1] and findings[0].kind == "softirq_saturation_all"
    assert saturation(softirq_table(_softirq_snapshot({0: 500.0, 1: 20.0}, {0: 0, 1: 800}))) == ([], [])


def test_hop_columns(run, hops) -> None:
    every = run["summary"]["sampling"]["every"]
    cpu = analyze_cpu(run["cpu"], hops, traffic_bytes(run), every)
    cols = cpu.hop_columns
    assert list(cols.columns) == HOP_CPU_COLUMNS and cols.index.equals(hops.index)
    roles = hops["role"].astype(str)
    veth = roles.str.contains("veth xmit") & (hops["packets"] > 0)
    assert veth.any() and (cols.loc[veth, "cpu_us_per_pkt"] > 0).all()
    assert cols.loc[veth, "cpu_component"].str.contains("veth").all()
    for keyword, component in (("vxlan", "vxlan/tunnel"), ("bridge", "bridge"), ("ip forward", "ip"),
                               ("socket delivery", "tcp")):
        rows = roles.str.contains(keyword) & (hops["packets"] > 0) & hops["expected"]
        assert rows.any(), keyword
        assert cols.loc[rows, "cpu_component"].str.contains(component, regex=False).all(), keyword
    unexpected = ~hops["expected"].astype(bool)
    assert cols.loc[unexpected, "cpu_us_per_pkt"].isna().all()
    # a component's time is spread over its hops by packets: the per-packet cost is the same on each
    vx = cols.loc[roles.str.contains("vxlan") & (hops["packets"] > 0) & hops["expected"], "cpu_us_per_pkt"]
    assert vx.nunique() == 1 or vx.max() - vx.min() < 1e-9
    # per GB: the hops' CPU summed over all hops equals the mapped components' time
    mapped = cpu.components[cpu.components["hop_roles"] != ""]
    gb = traffic_bytes(run) / 1e9
    assert (cols["cpu_us_per_gb"].fillna(0).sum() * gb) == pytest.approx(
        mapped[mapped["component"].isin(set(", ".join(cols["cpu_component"]).split(", ")))]["cpu_ms"].sum() * 1e3,
        rel=1e-6)


def test_sampled_hop_counts_are_scaled(run, hops) -> None:
    one = hop_cpu(component_table(run["cpu"]), hops, None, 1)
    five = hop_cpu(component_table(run["cpu"]), hops, None, 5)
    ok = one["cpu_us_per_pkt"].notna()
    assert (five.loc[ok, "cpu_us_per_pkt"] * 5).tolist() == pytest.approx(one.loc[ok, "cpu_us_per_pkt"].tolist())
    assert one["cpu_us_per_gb"].isna().all()  # no traffic volume, no per-GB cost


def test_summary_block(run, hops) -> None:
    every = run["summary"]["sampling"]["every"]
    s = analyze_cpu(run["cpu"], hops, traffic_bytes(run), every).summary
    json.dumps(s, allow_nan=False)
    assert s["samples"] == sum(x["count"] for x in run["cpu"]["samples"])
    assert s["top_component"] in {"tcp", "socket copy"}
    assert 50 < s["datapath_pct"] <= 100 and 0 < s["datapath_pct_of_capacity"] <= s["datapath_pct"]
    assert s["packets"] == flow_packets(hops) * every
    assert abs(sum(c["share_pct"] for c in s["components"].values()) - 100) < 0.01
    assert set(s["softirq"]) == {"0", "1"} and s["saturated_cpus"] == [] and s["findings"] == []
    tcp = s["components"]["tcp"]
    assert tcp["us_per_pkt"] == pytest.approx(tcp["cpu_ms"] * 1e3 / s["packets"], rel=1e-3)


def test_netfilter_rules_show_up() -> None:
    """2000 iptables(-nft) rules in FORWARD: nftables becomes the largest datapath component."""
    run = recorded(TCP_RULES)
    comps = component_table(run["cpu"])
    top = comps[comps["datapath"]].iloc[0]
    assert top["component"] == "netfilter/nftables" and top["share_pct"] > 10


def test_with_cpu_and_traffic_bytes(run, hops) -> None:
    a = analyze(run["hops"])
    cpu = analyze_cpu(run["cpu"], a.hops)
    b = with_cpu(a, cpu)
    assert list(b.hops.columns) == list(a.hops.columns) + HOP_CPU_COLUMNS and len(b.hops) == len(a.hops)
    assert result_bytes({"tool": "iperf3", "bytes": 10}) == 10
    assert result_bytes({"tool": "udp", "received_bytes": 5, "sent_bytes": 6}) == 5
    assert result_bytes({"tool": "ping"}) is None and result_bytes(None) is None


def test_empty_snapshot() -> None:
    snap = {"elapsed_s": 0.0, "cpus": [0], "stacks": [], "samples": [], "softirq": []}
    cpu = analyze_cpu(snap)
    assert cpu.components.empty and cpu.summary["samples"] == 0 and cpu.summary["top_component"] is None
    assert math.isnan(cpu.softirq.iloc[0]["net_rx_pct"])
    json.dumps(cpu.summary, allow_nan=False)
