# SPDX-License-Identifier: Apache-2.0
"""Observed vs expected path on recorded and synthetic snapshots (no root).

Recorded with `cniprof trace --export` on the labs (netns names normalised to the default instance):
- recorded_flannel_vxlan_hostgw_route_udp23.json: the flannel VXLAN lab with node1 routing node2's /24 over the
  underlay (a host-gw route), 23 UDP datagrams: the tunnel hops are skipped;
- recorded_calico_bgp_pod_to_host_ping7.json: Calico BGP, pod-a to its node's address, ping -c 7 (the reply
  chain is not the request's mirror);
- recorded_flannel_udp23.json / recorded_flannel_ping7.json: clean flannel VXLAN runs.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from cniprof.analysis import path_check
from cniprof.analysis.path_check import GOES_BACK, LEAVES, MISSING, OFF, REJOINS, SKIPS, check
from cniprof.analysis.record import TraceRecord
from cniprof.report.export import export_trace

DATA = Path(__file__).parent / "data"


def _load(name: str) -> dict:
    return json.loads((DATA / name).read_text())


@pytest.fixture
def udp() -> dict:
    return _load("recorded_flannel_udp23.json")


@pytest.mark.parametrize("name", ["recorded_flannel_udp23.json", "recorded_flannel_ping7.json",
                                  "recorded_calico_bgp_pod_to_host_ping7.json"])
def test_clean_runs_match(name: str) -> None:
    c = check(_load(name))
    assert c.ok, c.lines()
    assert not c.missing and not c.unexpected and not c.left_path
    assert c.lines()[0].startswith("path check: observed chain = expected")


def test_idle_direction_is_not_missing(udp: dict) -> None:
    c = check(udp)
    fwd, rev = c.directions
    assert fwd.active and (fwd.started, fwd.completed) == (23, 23)
    assert not rev.active and rev.missing == ()
    assert "pod-c→pod-a: no traffic" in c.lines()[0]


def test_pod_to_host_directions_are_labelled_by_endpoint() -> None:
    c = check(_load("recorded_calico_bgp_pod_to_host_ping7.json"))
    assert [d.direction for d in c.directions] == ["pod-a→node1", "node1→pod-a"]
    assert all(d.completed == 7 for d in c.directions)


def test_route_around_the_tunnel() -> None:
    c = check(_load("recorded_flannel_vxlan_hostgw_route_udp23.json"))
    assert not c.ok
    fwd = c.directions[0]
    assert [(h.seq, h.role) for h in fwd.missing] == [(3, "ip forward"), (4, "vxlan encap"), (6, "vxlan decap"),
                                                     (7, "ip forward")]
    assert all(h.kind == MISSING and h.count == 0 for h in fwd.missing)
    assert [(h.src, h.dst, h.count) for h in fwd.unexpected] == [
        ("node1 cni0 receive", "node1 eth0 queue", 23),
        ("node2 eth0 receive", "node2 cni0 queue", 23),
    ]
    assert fwd.unexpected[0].kind == f"{SKIPS}: node1 flannel.1 queue"
    assert fwd.completed == 23 and not fwd.ended
    lines = c.lines()
    assert lines[0].startswith("path check: MISMATCH")
    assert any("missing hop 4 'vxlan encap'" in line for line in lines)
    d = c.to_dict()
    assert d["ok"] is False and len(d["directions"][0]["unexpected"]) == 2
    json.dumps(d)  # JSON-ready


def test_synthetic_skip_drop_and_stale() -> None:
    """flannel_cross_node.json (tests/unit/data/flannel_synth.py): 7 skip cni0, 3 dropped at node1 eth0 queue,
    2 go stale after node2 eth0 receive."""
    c = check(_load("flannel_cross_node.json"))
    fwd = c.directions[0]
    assert [(h.src, h.dst, h.count) for h in fwd.unexpected] == [
        ("node1 veth-pod-a receive", "node1 flannel.1 queue", 7)]
    ended = {e.point: e for e in fwd.ended}
    assert ended["node1 eth0 queue"].count == 3 and ended["node1 eth0 queue"].on_path
    assert ended["node1 eth0 queue"].drops == (("NOT_SPECIFIED", 3),)
    assert ended["node2 eth0 receive"].count == 2 and ended["node2 eth0 receive"].drops == ()
    assert not c.left_path  # stopping on the path is a drop/tracking matter, not a different path
    assert c.directions[1].ok


def _point(snap: dict, name: str) -> int:
    from cniprof.analysis.hops import point_name

    return next(int(p["id"]) for p in snap["points"] if point_name(p) == name)


def _divert(snap: dict, src: str, dst: str, n: int, follow: list[tuple[str, str]] = ()) -> dict:
    """n packets of the forward direction take src → dst instead of their next expected hop (then `follow`)."""
    snap = copy.deepcopy(snap)
    a, b = _point(snap, src), _point(snap, dst)
    nxt = next(h for h in snap["hops"] if h["expected"] and h["dir"] == 0 and h["from"] == a)
    nxt["count"] -= n
    snap["hops"].append({"from": a, "to": b, "expected": False, "count": n, "sum_ns": 1000 * n, "buckets": {}})
    for x, y in follow:
        snap["hops"].append({"from": _point(snap, x), "to": _point(snap, y), "expected": False, "count": n,
                             "sum_ns": 1000 * n, "buckets": {}})
    return snap


def test_packets_that_leave_the_path_and_end_off_it(udp: dict) -> None:
    # 5 packets leave node1 cni0 for a pod-b veth (a wrong bridge port) and go on into pod-b
    snap = _divert(udp, "node1 cni0 receive", "node1 veth-pod-b queue", 5,
                   follow=[("node1 veth-pod-b queue", "node1 pod-b eth0 receive")])
    c = check(snap)
    fwd = c.directions[0]
    kinds = {(h.src, h.dst): h.kind for h in fwd.unexpected}
    assert kinds[("node1 cni0 receive", "node1 veth-pod-b queue")] == LEAVES
    assert kinds[("node1 veth-pod-b queue", "node1 pod-b eth0 receive")] == OFF
    assert [(e.point, e.count, e.on_path) for e in c.left_path] == [("node1 pod-b eth0 receive", 5, False)]
    assert not c.ok
    assert any("5 packets ended at node1 pod-b eth0 receive, off the path" in line for line in c.lines())


def test_extra_routing_pass_goes_back(udp: dict) -> None:
    # a hairpin: after flannel.1, 4 packets come back to cni0 and then take the normal way
    snap = copy.deepcopy(udp)
    a, b = _point(snap, "node1 flannel.1 queue"), _point(snap, "node1 cni0 receive")
    snap["hops"].append({"from": a, "to": b, "expected": False, "count": 4, "sum_ns": 4000, "buckets": {}})
    c = check(snap)
    (h,) = c.directions[0].unexpected
    assert h.kind == GOES_BACK and h.count == 4
    assert not c.ok


def test_rejoining_pair_and_unassigned_pair(udp: dict) -> None:
    snap = copy.deepcopy(udp)
    off, on = _point(snap, "node2 pod-d eth0 receive"), _point(snap, "node2 pod-c eth0 receive")
    stray_a, stray_b = _point(snap, "node1 pod-b eth0 queue"), _point(snap, "node2 pod-d eth0 queue")
    snap["hops"] += [
        {"from": off, "to": on, "expected": False, "count": 2, "sum_ns": 2000, "buckets": {}},
        {"from": stray_a, "to": stray_b, "expected": False, "count": 1, "sum_ns": 1000, "buckets": {}},
    ]
    c = check(snap)
    assert [h.kind for h in c.directions[0].unexpected] == [REJOINS]
    assert [(h.src, h.dst) for h in c.unassigned] == [("node1 pod-b eth0 queue", "node2 pod-d eth0 queue")]
    assert not c.ok


def test_missing_hop_while_the_direction_has_traffic(udp: dict) -> None:
    snap = copy.deepcopy(udp)
    hop = next(h for h in snap["hops"] if h["expected"] and h["dir"] == 0 and h["role"] == "vxlan encap")
    hop["count"], hop["sum_ns"], hop["buckets"] = 0, 0, {}
    c = check(snap)
    assert [h.role for h in c.directions[0].missing] == ["vxlan encap"]
    # the packets "ended" at flannel.1 as far as the counts go: on the path, so not a path change by itself
    assert all(e.on_path for e in c.directions[0].ended)


def test_summary_json_carries_the_check(tmp_path: Path) -> None:
    snap = _load("recorded_flannel_vxlan_hostgw_route_udp23.json")
    paths = export_trace(tmp_path, TraceRecord("flannel", "vxlan", "cross-node", snap, 1.0))
    summary = json.loads(paths["summary.json"].read_text())
    assert summary["path_check"] == json.loads(json.dumps(path_check.check(snap).to_dict()))
    assert summary["path_check"]["ok"] is False


def test_unlabelled_snapshot_has_no_check(tmp_path: Path) -> None:
    empty = {"version": 1, "elapsed_s": 1.0, "points": [], "hops": [], "e2e": [], "drops": [], "counters": {},
             "directions": [{"dir": 0, "src_pod": "pod-a", "dst_pod": "pod-c"}]}
    summary = json.loads(export_trace(tmp_path, TraceRecord("flannel", "vxlan", "cross-node", empty, 1.0))["summary.json"].read_text())
    assert summary["path_check"] is None


def _scaled(udp: dict, factor: int) -> dict:
    """The udp23 run as if factor times as many packets had taken the same path."""
    snap = copy.deepcopy(udp)
    for h in snap["hops"]:
        h["count"] *= factor
    for e in snap["e2e"]:
        e["count"] *= factor
    return snap


def test_one_stray_pair_among_many_packets_is_negligible(udp: dict) -> None:
    # issue 11: a 5-minute trace flipped to MISMATCH for 1 unexpected hop among 1.4 million packets
    snap = _scaled(udp, 60_000)  # 1.38 million packets forward
    a, b = _point(snap, "node1 flannel.1 queue"), _point(snap, "node1 cni0 receive")
    snap["hops"].append({"from": a, "to": b, "expected": False, "count": 1, "sum_ns": 1000, "buckets": {}})
    c = check(snap)
    (h,) = c.directions[0].unexpected
    assert h.negligible and c.ok and c.negligible == 1
    lines = c.lines()
    assert lines[0].startswith("path check: observed chain = expected")
    assert "1 packet off the chain is negligible: below 0.1 % of the direction's packets" in lines[1]
    assert any(line.endswith("(goes back along the path), negligible") for line in lines)
    d = c.to_dict()
    assert d["ok"] and d["negligible_share"] == path_check.NEGLIGIBLE_SHARE and d["negligible_packets"] == 1


def test_a_visible_share_off_the_path_is_a_mismatch(udp: dict) -> None:
    # 0.1 % is the line: 1380 of 1.38 million packets (exactly 0.1 %) is no longer noise
    snap = _scaled(udp, 60_000)
    a, b = _point(snap, "node1 flannel.1 queue"), _point(snap, "node1 cni0 receive")
    snap["hops"].append({"from": a, "to": b, "expected": False, "count": 1380, "sum_ns": 1000, "buckets": {}})
    c = check(snap)
    assert not c.directions[0].unexpected[0].negligible and not c.ok


def test_ended_before_the_end_names_what_the_probe_saw_there(udp: dict) -> None:
    snap = copy.deepcopy(udp)
    cni0 = _point(snap, "node1 cni0 receive")
    for h in snap["hops"]:  # 5 of the 23 stop after node1 cni0 receive
        if h["expected"] and h["dir"] == 0 and h["seq"] >= 3:
            h["count"] -= 5
    snap["drops"] = [{"point": cni0, "reason": 62, "reason_name": "TC_EGRESS", "count": 3}]
    snap["ends"] = [{"point": cni0, "kind": "unseen", "count": 1}]
    snap["live"] = [{"point": cni0, "in_flight": 1, "stale": 0}]
    (e,) = check(snap).directions[0].ended
    assert (e.point, e.count, e.on_path) == ("node1 cni0 receive", 5, True)
    assert e.line().endswith("before the path's end (dropped: TC_EGRESS 3; unseen 1, in flight 1)")
