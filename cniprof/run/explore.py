# SPDX-License-Identifier: Apache-2.0
"""Read a datapath's real chain off the lab: every point registered, no expected hop, a few real packets.

Why: a model's chain must be what the kernel does, not what we believe it does. With no expected pairs every
hop a tracked packet makes lands in the probe's "unexpected" table with its count and mean, so sending a known
number of packets and walking the pairs from the sender's first point gives the chain in order, ready to be
written down as Steps (only the hop roles need a human). `cniprof lab explore` prints it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from cniprof.bpf.build import object_path
from cniprof.cni.model import Step
from cniprof.cni.topology import Pod, Topology
from cniprof.probes.hops import HopProbe
from cniprof.probes.hops import object_name as hops_object_name
from cniprof.probes.plan import FULL_EVENTS, Direction, Point, all_points
from cniprof.traffic.ping import Ping
from cniprof.traffic.udp_burst import UdpBurst


@dataclass(frozen=True)
class ObservedHop:
    src: str  # point names ("node1 cni0 receive")
    dst: str
    count: int
    mean_us: float


@dataclass(frozen=True)
class Observed:
    """What one direction's packets did: the walked chain (as Steps and as hops), and every pair seen."""

    direction: str
    chain: tuple[Step, ...]
    hops: tuple[ObservedHop, ...]  # in walk order
    others: tuple[ObservedHop, ...]  # pairs seen but not on the walk (noise, retransmits, a second route)


def _name(pt: Point) -> str:
    where = f"{pt.node} {pt.pod}" if pt.pod else pt.node  # node points carry no pod
    return f"{where} {pt.device} {pt.event}"


def _step(pt: Point, a: Pod, b: Pod, topo: Topology, reached_dst: bool) -> Step:
    """The chain step a point is for packets going from a to b."""
    if pt.event == "copy":
        place = "src" if pt.netns == a.netns else "dst"
        pod = a if place == "src" else b
        return Step(f"{place}_{'pod' if pod.devices else 'node'}", "socket", "copy")
    if pt.pod and pt.role not in ("underlay", "bridge", "vxlan", "tunnel", "host_veth"):
        return Step("src_pod" if pt.pod == a.name else "dst_pod", pt.role, pt.event)
    if pt.role == "host_veth":
        owner = next((p for p in topo.pods if p.host_veth == pt.device and p.node == pt.node), None)
        return Step("src_node" if owner is not None and owner.name == a.name else "dst_node", pt.role, pt.event)
    src_side = pt.node == a.node and (a.node != b.node or not reached_dst)
    return Step("src_node" if src_side else "dst_node", pt.role, pt.event)


def observe(snapshot: Mapping[str, Any], points: list[Point], a: Pod, b: Pod, topo: Topology,
            d: int) -> tuple[Observed, int | None]:
    """Walk direction d's pairs from the start point its packets left, always along the most frequent unused
    pair; also returns that start point's id."""
    pairs = {(h["from"], h["to"]): h for h in snapshot["hops"] if not h.get("expected")}
    starts = [i for i, p in enumerate(points) if p.start_dir == d]
    start = max((i for i in starts if any(k[0] == i for k in pairs)),
                key=lambda i: sum(h["count"] for k, h in pairs.items() if k[0] == i), default=None)
    chain: list[Step] = []
    walked: list[ObservedHop] = []
    used: set[tuple[int, int]] = set()

    def hop(key: tuple[int, int]) -> ObservedHop:
        h = pairs[key]
        return ObservedHop(_name(points[key[0]]), _name(points[key[1]]), int(h["count"]),
                           h["sum_ns"] / h["count"] / 1000.0 if h["count"] else float("nan"))

    if start is not None:
        chain.append(_step(points[start], a, b, topo, False))
        cur = start
        while True:
            nxt = sorted((k for k in pairs if k[0] == cur and k not in used), key=lambda k: -pairs[k]["count"])
            if not nxt:
                break
            key = nxt[0]
            used.add(key)
            walked.append(hop(key))
            reached = any(s.place.startswith("dst") for s in chain)
            chain.append(_step(points[key[1]], a, b, topo, reached or points[key[1]].pod == b.name))
            cur = key[1]
    mine = {i for k in used for i in k}
    others = tuple(hop(k) for k in pairs if k not in used and (k[0] in mine or k[1] in mine))
    return Observed(f"{a.name}→{b.name}", tuple(chain), tuple(walked), others), start


def _run(points: list[Point], a: Pod, b: Pod, traffic: str, count: int) -> dict[str, Any]:
    """Send `count` packets from a to b with the probe attached (ping: and their replies); the snapshot after."""
    dirs = [Direction(0, a.name, b.name, a.ip, b.ip), Direction(1, b.name, a.name, b.ip, a.ip)]
    with HopProbe(object_path(hops_object_name()), points, [], dirs, sample_every=1) as probe:
        probe.start()
        if traffic == "ping":
            gen: Any = Ping(a.netns, b.ip, count)
        else:
            gen = UdpBurst(a.netns, b.netns, b.ip, count)
        with gen:
            gen.wait(timeout=30.0)
        time.sleep(0.2)
        return probe.snapshot()


def explore(topo: Topology, a: Pod, b: Pod, traffic: str = "ping", count: int = 10,
            events: tuple[str, ...] = FULL_EVENTS) -> list[Observed]:
    """What packets from a to b (direction 0) and, with ping, their replies (direction 1) did.

    Replies rather than packets sent by b: a node sending to a pod picks its source address by route (cni0's),
    while the traced reply carries the address the pod sent to, as traced traffic does.

    A packet starts being tracked at a queue point in its sender's namespace. A pod has one; a node endpoint
    (pod-to-host replies, the host model) has one per device, and a later start point restarts the tracking, so
    the run is repeated without the start point the packets were last seen leaving until none is left: the last
    run that saw packets started at their first device.
    """
    base = all_points(topo, events)
    out = []
    for d in (0, 1) if traffic == "ping" else (0,):
        src, dst = (a, b) if d == 0 else (b, a)
        candidates = {i for i, p in enumerate(base) if p.netns == src.netns and p.event == "queue"}
        best = Observed(f"{src.name}→{dst.name}", (), (), ())
        while candidates:
            pts = [replace(p, start_dir=d) if i in candidates else p for i, p in enumerate(base)]
            seen, start = observe(_run(pts, a, b, traffic, count), pts, src, dst, topo, d)
            if start is None:
                break
            best = seen
            candidates.discard(start)
        out.append(best)
    return out
def format_steps(steps: tuple[Step, ...]) -> str:
    """The chain as Python source, to paste into a model (hop roles left for a human to name)."""
    return "\n".join(f'Step("{s.place}", "{s.device}", "{s.event}"),' for s in steps)
