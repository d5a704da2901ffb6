# SPDX-License-Identifier: Apache-2.0
"""Hop table, step resolution, drops, end-to-end and reconciliation on the synthetic flannel snapshot.

The fixture (tests/unit/data/flannel_synth.py) has known packet counts per hop, so counts are asserted exactly.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import math
from pathlib import Path

import pandas as pd
import pytest

from cniprof.analysis.histogram import Histogram
from cniprof.analysis.hops import (
    UNASSIGNED,
    direction_label,
    drops_table,
    e2e_table,
    hop_table,
    pod_places,
    reconcile,
    resolve_step,
)
from cniprof.analysis.summary import analyze
from cniprof.cni.model import Step

DATA = Path(__file__).parent / "data"
_spec = importlib.util.spec_from_file_location("flannel_synth", DATA / "flannel_synth.py")
synth = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(synth)  # type: ignore[union-attr]

FWD, REV = "pod-a→pod-c", "pod-c→pod-a"
LABELS = ("expected", "dir", "seq", "role", "in_e2e")


@pytest.fixture
def snap() -> dict:
    return json.loads((DATA / "flannel_cross_node.json").read_text())


def unlabelled(snapshot: dict) -> dict:
    """The snapshot as a consumer that does not label hops would write it: analysis must use the chain."""
    s = copy.deepcopy(snapshot)
    for h in s["hops"]:
        for k in LABELS:
            h.pop(k, None)
    return s


def pid(snapshot: dict, node: str, device: str, event: str, pod: str | None = None) -> int:
    return next(
        p["id"]
        for p in snapshot["points"]
        if (p["node"], p["device"], p["event"], p["pod"]) == (node, device, event, pod)
    )


# --- hop table --------------------------------------------------------------------------------------------------


def test_expected_hops_in_path_order(snap: dict) -> None:
    df = hop_table(snap)
    fwd = df[(df.direction == FWD) & df.expected]
    assert fwd.seq.tolist() == list(range(1, 14))
    assert fwd.role.tolist() == [s.hop_role for s in synth.CHAIN.steps[1:]]
    assert fwd.hop.tolist()[:6] == [
        "node1 pod-a eth0 → node1 veth-pod-a",
        "node1 veth-pod-a rx → receive",
        "node1 veth-pod-a → node1 cni0",
        "node1 cni0 → node1 flannel.1",
        "node1 flannel.1 → node1 eth0",
        "node1 eth0 → node2 eth0",
    ]
    assert fwd.hop.iloc[-1] == "node2 pod-c eth0 → node2 pod-c socket"
    row = fwd[fwd.role == "vxlan encap"].iloc[0]
    assert (row.node, row.device, row.event) == ("node1", "eth0", "queue")
    assert row.from_point == "node1 flannel.1 queue" and row.to_point == "node1 eth0 queue"
    rev = df[(df.direction == REV) & df.expected]
    assert rev.hop.iloc[0] == "node2 pod-c eth0 → node2 veth-pod-c"
    assert len(rev) == 13


def test_exact_packet_counts(snap: dict) -> None:
    df = hop_table(snap)
    fwd = df[(df.direction == FWD) & df.expected].set_index("seq").packets
    # 1000 sent; 7 skip cni0 receive (hops 3-4); 3 dropped at node1 eth0 queue; 2 stale after node2 eth0 receive
    assert fwd.tolist() == [1000, 1000, 993, 993, 1000, 997, 997, 995, 995, 995, 995, 995, 995]
    rev = df[(df.direction == REV) & df.expected].set_index("seq").packets
    assert rev.tolist() == [401] * 12 + [0]


def test_unobserved_expected_hop_has_zero_packets_and_nan(snap: dict) -> None:
    df = hop_table(snap)
    row = df[(df.direction == REV) & (df.role == "socket delivery")].iloc[0]
    assert row.packets == 0 and bool(row.expected)
    assert all(math.isnan(row[c]) for c in ("p50_us", "p90_us", "p99_us", "mean_us", "share_pct"))


def test_unexpected_hop_is_appended(snap: dict) -> None:
    df = hop_table(snap)
    odd = df[~df.expected]
    assert len(odd) == 1
    row = odd.iloc[0]
    assert row.direction == FWD and row.role == "unexpected" and row.seq == 14
    assert row.hop == "node1 veth-pod-a → node1 flannel.1"
    assert row.packets == 7
    entry = next(h for h in snap["hops"] if not h["expected"])
    assert row.mean_us == pytest.approx(entry["sum_ns"] / entry["count"] / 1000)
    assert math.isnan(row.p50_us)  # the kernel keeps no histogram for pairs off the chain
    assert df[df.direction == FWD].index[-1] == row.name  # after the expected hops of its direction


def test_latencies_and_share(snap: dict) -> None:
    df = hop_table(snap)
    e2e = {e["dir"]: Histogram.from_entry(e) for e in snap["e2e"]}
    for h in snap["hops"]:
        if not h["expected"] or not h["count"]:
            continue
        label = FWD if h["dir"] == 0 else REV
        row = df[(df.direction == label) & (df.seq == h["seq"])].iloc[0]
        hist = Histogram.from_entry(h)
        assert row.mean_us == pytest.approx(h["sum_ns"] / h["count"] / 1000)
        assert row.p50_us == pytest.approx(hist.percentile(50) / 1000)
        assert row.p99_us == pytest.approx(hist.percentile(99) / 1000)
        assert row.p50_us <= row.p90_us <= row.p99_us
        if h["in_e2e"]:
            assert row.share_pct == pytest.approx(row.mean_us / (e2e[h["dir"]].mean / 1000) * 100)
        else:  # socket delivery lies after the end-to-end interval
            assert math.isnan(row.share_pct)


def test_chain_resolution_matches_the_labels(snap: dict) -> None:
    labelled = hop_table(snap)
    resolved = hop_table(unlabelled(snap), synth.CHAIN)
    pd.testing.assert_frame_equal(labelled, resolved)
    pd.testing.assert_frame_equal(labelled, hop_table(unlabelled(snap), synth.CHAIN.steps, synth.TOPOLOGY))
    per_dir = {FWD: synth.CHAIN, "1": synth.CHAIN.steps}
    pd.testing.assert_frame_equal(labelled, hop_table(unlabelled(snap), per_dir))


def test_unlabelled_snapshot_needs_a_chain(snap: dict) -> None:
    with pytest.raises(ValueError, match="chain"):
        hop_table(unlabelled(snap))


def test_missing_point_leaves_expected_hops_empty(snap: dict) -> None:
    # node2 flannel.1 receive never fired (e.g. its program did not attach): the kernel saw eth0 receive -> cni0
    s = unlabelled(snap)
    gone = pid(s, "node2", "flannel.1", "receive")
    before, after = pid(s, "node2", "eth0", "receive"), pid(s, "node2", "cni0", "queue")
    into = next(h for h in s["hops"] if h["to"] == gone)
    out_of = next(h for h in s["hops"] if h["from"] == gone)
    joined = Histogram.from_entry(into).merge(
        Histogram.from_entry(out_of)
    )  # stand-in; only count/sum are kept
    s["hops"] = [h for h in s["hops"] if gone not in (h["from"], h["to"])]
    s["hops"].append(
        {"from": before, "to": after, "count": into["count"], "sum_ns": joined.sum_ns, "buckets": {}}
    )
    s["points"] = [p for p in s["points"] if p["id"] != gone]
    df = hop_table(s, synth.CHAIN)
    fwd = df[df.direction == FWD]
    for seq in (8, 9):
        row = fwd[fwd.seq == seq].iloc[0]
        assert row.packets == 0 and bool(row.expected) and math.isnan(row.mean_us)
        assert "node2 (vxlan)" in row.hop
    assert pd.isna(fwd[fwd.seq == 8].iloc[0].to_id)
    odd = fwd[~fwd.expected]
    assert set(odd.hop) == {"node2 eth0 → node2 cni0", "node1 veth-pod-a → node1 flannel.1"}
    recon = reconcile(df, e2e_table(s)).set_index("direction")
    assert recon.loc[FWD, "hops_observed"] == 10 and recon.loc[FWD, "hops_expected"] == 12
    assert recon.loc[FWD, "unattributed_pct"] > 5  # the two lost hops' time is no longer attributed


def test_unassigned_pairs(snap: dict) -> None:
    a, b = pid(snap, "node1", "cni0", "rx"), pid(snap, "node2", "cni0", "rx")
    snap["hops"].append({"from": a, "to": b, "expected": False, "count": 2, "sum_ns": 4000, "buckets": {}})
    df = hop_table(snap)
    row = df[df.direction == UNASSIGNED].iloc[0]
    assert row.packets == 2 and row.seq == 1 and math.isnan(row.share_pct)
    assert row.hop == "node1 cni0 → node2 cni0"


def test_empty_snapshot() -> None:
    s = {"version": 1, "points": [], "hops": [], "e2e": [], "drops": [], "counters": {}, "directions": []}
    a = analyze(s, synth.CHAIN)
    assert a.hops.empty and a.drops.empty and a.e2e.empty and a.reconciliation.empty
    assert a.directions == () and a.forward is None and a.lost_events is None


def test_directions_without_traffic(snap: dict) -> None:
    s = unlabelled(snap)
    s["hops"], s["e2e"] = [], []
    a = analyze(s, synth.CHAIN)
    assert (a.hops.packets == 0).all() and len(a.hops) == 26
    assert a.e2e.packets.tolist() == [0, 0]
    assert a.reconciliation.unattributed_pct.isna().all()


# --- resolution -------------------------------------------------------------------------------------------------


def test_resolve_each_place(snap: dict) -> None:
    d = {"src_pod": "pod-a", "dst_pod": "pod-c"}
    pts = snap["points"]

    def name(step: Step) -> tuple:
        p = resolve_step(step, d, pts)
        assert p is not None, step
        return p["node"], p["pod"], p["device"], p["event"]

    assert name(Step("src_pod", "pod_veth", "queue")) == ("node1", "pod-a", "eth0", "queue")
    assert name(Step("src_node", "host_veth", "rx")) == ("node1", None, "veth-pod-a", "rx")
    assert name(Step("src_node", "underlay", "queue")) == ("node1", None, "eth0", "queue")
    assert name(Step("dst_node", "underlay", "rx")) == ("node2", None, "eth0", "rx")
    assert name(Step("dst_node", "vxlan", "receive")) == ("node2", None, "flannel.1", "receive")
    assert name(Step("dst_pod", "pod_veth", "receive")) == ("node2", "pod-c", "eth0", "receive")
    assert name(Step("dst_pod", "socket", "copy")) == ("node2", "pod-c", "socket", "copy")
    assert resolve_step(Step("dst_node", "socket", "copy"), d, pts) is None  # no socket point in a node netns
    assert resolve_step(Step("src_node", "vxlan", "xmit"), d, pts) is None  # event not probed


def two_pods_on_node1(snap: dict, tag_pods: bool) -> dict:
    """Add pod-b on node1 (same-node path): two host veths in node1's namespace."""
    s = copy.deepcopy(snap)
    n = len(s["points"])
    for i, ev in enumerate(("queue", "rx", "receive")):
        s["points"].append(
            {
                "id": n + i,
                "event": ev,
                "netns": "cniprof-node1",
                "device": "veth-pod-b",
                "role": "host_veth",
                "node": "node1",
                "pod": "pod-b" if tag_pods else None,
            }
        )
    for i, ev in enumerate(("queue", "rx", "receive")):
        s["points"].append(
            {
                "id": n + 3 + i,
                "event": ev,
                "netns": "cniprof-node1-pod-b",
                "device": "eth0",
                "role": "pod_veth",
                "node": "node1",
                "pod": "pod-b",
            }
        )
    if tag_pods:
        for p in s["points"]:
            if p["device"] in ("veth-pod-a", "veth-pod-c"):
                p["pod"] = p["device"][5:]
    return s


def test_host_veth_is_the_pods_own(snap: dict, caplog: pytest.LogCaptureFixture) -> None:
    d = {"src_pod": "pod-a", "dst_pod": "pod-b"}
    into_b = Step("dst_node", "host_veth", "queue")
    from_a = Step("src_node", "host_veth", "receive")
    # no way to tell the veths apart: left unresolved (and said so) rather than guessed
    s = two_pods_on_node1(snap, tag_pods=False)
    with caplog.at_level(logging.WARNING):
        assert resolve_step(into_b, d, s["points"]) is None
    assert "ambiguous" in caplog.text
    # the topology names each pod's host veth
    topo = copy.deepcopy(synth.TOPOLOGY)
    topo["pods"].append({"name": "pod-b", "node": "node1", "host_veth": "veth-pod-b"})
    pods = pod_places(s["points"], topo)
    assert resolve_step(into_b, d, s["points"], pods)["device"] == "veth-pod-b"
    assert resolve_step(from_a, d, s["points"], pods)["device"] == "veth-pod-a"
    # or the probe consumer tagged host veth points with their pod
    s = two_pods_on_node1(snap, tag_pods=True)
    assert resolve_step(into_b, d, s["points"])["device"] == "veth-pod-b"
    assert resolve_step(from_a, d, s["points"])["device"] == "veth-pod-a"
    assert resolve_step(Step("dst_pod", "pod_veth", "rx"), d, s["points"])["pod"] == "pod-b"


def test_pod_places_from_points_and_topology(snap: dict) -> None:
    assert pod_places(snap["points"])["pod-c"].node == "node2"
    assert pod_places(snap["points"], synth.TOPOLOGY)["pod-a"].host_veth == "veth-pod-a"
    assert direction_label({"src_pod": "x", "dst_pod": "y"}) == "x→y"


# --- drops, e2e, reconciliation ---------------------------------------------------------------------------------


def test_drops_table(snap: dict) -> None:
    df = drops_table(snap)
    assert list(df.columns) == ["point", "node", "device", "event", "reason", "reason_code", "count"]
    assert df.to_dict("records") == [
        {
            "point": "node1 eth0 queue",
            "node": "node1",
            "device": "eth0",
            "event": "queue",
            "reason": "NOT_SPECIFIED",
            "reason_code": 2,
            "count": 3,
        },
        {
            "point": "node1 pod-a eth0 receive",
            "node": "node1",
            "device": "eth0",
            "event": "receive",
            "reason": "TCP_OLD_DATA",
            "reason_code": 16,
            "count": 1,
        },
    ]
    assert drops_table({"points": [], "drops": []}).empty


def test_e2e_table(snap: dict) -> None:
    df = e2e_table(snap).set_index("direction")
    assert df.packets.to_dict() == {FWD: 995, REV: 401}
    for e in snap["e2e"]:
        label = FWD if e["dir"] == 0 else REV
        assert df.loc[label, "mean_us"] == pytest.approx(e["sum_ns"] / e["count"] / 1000)
        assert df.loc[label, "p50_us"] <= df.loc[label, "p99_us"]


def test_reconciliation(snap: dict) -> None:
    a = analyze(snap)
    recon = a.reconciliation.set_index("direction")
    for label in (FWD, REV):
        mine = a.hops[(a.hops.direction == label) & a.hops.expected & a.hops.in_e2e]
        assert recon.loc[label, "hop_mean_sum_us"] == pytest.approx(mine.mean_us.sum())
        assert recon.loc[label, "hops_expected"] == 12 and recon.loc[label, "hops_observed"] == 12
        e2e_mean = a.e2e_for(label)["mean_us"]
        assert recon.loc[label, "e2e_mean_us"] == e2e_mean
        assert recon.loc[label, "unattributed_pct"] == pytest.approx(
            (e2e_mean - recon.loc[label, "hop_mean_sum_us"]) / e2e_mean * 100
        )
    # every reverse packet crossed every hop and ended the path: the hops account for the e2e time exactly
    assert recon.loc[REV, "unattributed_pct"] == pytest.approx(0, abs=1e-9)
    # forward: stale/dropped packets and the 7 skippers make it close, not exact
    assert abs(recon.loc[FWD, "unattributed_pct"]) < 1
