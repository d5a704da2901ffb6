# SPDX-License-Identifier: Apache-2.0
"""Node agents' snapshots merged into one snapshot of the single tracer's schema (cniprof/analysis/node_merge.py),
checked against the single tracer's snapshot of the same packets (recorded)."""

from __future__ import annotations

import numpy as np
from agents_data import disagreements, recorded

from cniprof.analysis import clock, node_merge, path_check
from cniprof.analysis.summary import analyze


def _merge(rec: dict) -> dict:
    crossings = [clock.Crossing(**c) for c in rec["crossings"]]
    recs = {n: clock.decode(v["records"]) for n, v in rec["nodes"].items()}
    result = clock.solve(clock.frame(recs), crossings)
    sides = {c.dir: (c.src_node, c.dst_node) for c in crossings}
    wire = {int(d): node_merge.WireLabel(**w) for d, w in rec["wire"].items()}
    snaps = {n: v["snapshot"] for n, v in rec["nodes"].items()}
    return node_merge.merge(snaps, sides, wire, result if result.ok else None)


def test_recorded_agents_give_the_single_tracers_table() -> None:
    rec = recorded()
    merged = _merge(rec)
    single = rec["single"]
    assert disagreements(single, merged) == []
    a, b = analyze(single), analyze(merged)
    cols = ["direction", "seq", "hop", "role", "node", "expected", "in_e2e"]
    assert a.hops[cols].equals(b.hops[cols])
    assert b.hops["packets"].tolist() == a.hops["packets"].tolist()
    wire = b.hops[b.hops["role"] == "underlay xmit + underlay backlog"]
    assert wire["hop"].tolist() == ["node1 eth0 → node2 eth0", "node2 eth0 → node1 eth0"]
    assert wire["node"].tolist() == ["node2", "node1"]
    # end to end from packets seen on both nodes: what the single tracer measured on one clock
    for (_, e1), (_, e2) in zip(a.e2e.iterrows(), b.e2e.iterrows()):
        assert e1["packets"] == e2["packets"] == 300
        assert abs(e1["mean_us"] - e2["mean_us"]) <= max(0.05 * e1["mean_us"], 1.0)
    assert path_check.check(merged).ok, path_check.check(merged).lines()


def test_point_ids_are_offset_per_node_and_rows_keep_their_node() -> None:
    rec = recorded()
    merged = _merge(rec)
    n1 = len(rec["nodes"]["node1"]["snapshot"]["points"])
    assert [p["id"] for p in merged["points"]] == list(range(len(merged["points"])))
    assert {p["node"] for p in merged["points"][:n1]} == {"node1"}
    assert {p["node"] for p in merged["points"][n1:]} == {"node2"}
    by_id = {p["id"]: p for p in merged["points"]}
    for h in merged["hops"]:
        if h.get("wire"):
            assert (by_id[h["from"]]["device"], by_id[h["to"]]["device"]) == ("eth0", "eth0")
            assert by_id[h["from"]]["node"] != by_id[h["to"]]["node"]
            assert h["uncertainty_ns"] > 0 and h["count"] == 300
        else:
            assert by_id[h["from"]]["node"] == by_id[h["to"]]["node"]
    assert set(merged["nodes"]) == {"node1", "node2"}
    assert merged["counters"]["started"] == sum(v["snapshot"]["counters"]["started"] for v in rec["nodes"].values())


def test_no_offset_no_wire_hop() -> None:
    """Two clocks are never subtracted without an offset: unknown, the merge has every node's hops and no wire."""
    rec = recorded()
    crossings = [clock.Crossing(**c) for c in rec["crossings"]]
    recs = {n: clock.decode(v["records"]) for n, v in rec["nodes"].items()}
    one_way = {n: r[r["dir"] == 0] for n, r in recs.items()}
    result = clock.solve(clock.frame(one_way), crossings)
    assert not result.ok
    snaps = {n: v["snapshot"] for n, v in rec["nodes"].items()}
    merged = node_merge.merge(snaps, {c.dir: (c.src_node, c.dst_node) for c in crossings}, {}, None)
    assert not any(h.get("wire") for h in merged["hops"])
    assert all(e["count"] == 0 for e in merged["e2e"])
    hops = analyze(merged).hops
    assert (hops[hops["expected"] & hops["in_e2e"]]["packets"] > 0).sum() == 16  # 8 node hops each way


def test_boundary_points() -> None:
    snap = recorded()["nodes"]["node1"]["snapshot"]
    last = node_merge.boundary_point(snap, 0, "last")
    first = node_merge.boundary_point(snap, 1, "first")
    pts = {p["id"]: p for p in snap["points"]}
    assert (pts[last]["device"], pts[last]["event"], pts[last]["record"]) == ("eth0", "queue", ["last"])
    assert (pts[first]["device"], pts[first]["event"], pts[first]["start_dir"]) == ("eth0", "receive", 1)
    assert node_merge.boundary_point(snap, 1, "last") is None
    assert np.isfinite(last)
