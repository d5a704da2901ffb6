# SPDX-License-Identifier: Apache-2.0
"""Topology + model + a pod pair -> what the hop probe must watch.

Every lab device gets a point per default event (so hops off the expected path show up as unexpected), the
expected chain of each direction is resolved to point ids, and each expected hop is labelled once here; analysis
reads these labels from the snapshot instead of resolving the model again.
"""

from __future__ import annotations

from dataclasses import dataclass

from cniprof.cni.model import Chain, Step
from cniprof.cni.topology import Pod, Topology, netns_inode
from cniprof.errors import CniprofError

# Each event a tracked packet passes costs a clock read and a histogram update (benchmarks/overhead.py), so the
# default is one point where a packet is handed to a device (queue) and one where a device hands it to the stack
# (receive). FULL_EVENTS adds netif_rx, which splits a veth transfer from the wait in the CPU backlog.
# net_dev_start_xmit is left out: on the noqueue devices of a CNI path it adds ~0.2 us of nothing; qdisc time
# still shows in the hop that starts at the device's queue point.
DEFAULT_EVENTS = ("queue", "receive")
FULL_EVENTS = ("queue", "rx", "receive")


@dataclass(frozen=True)
class Point:
    """A probe point with the names analysis uses; id is assigned by HopProbe in list order."""

    event: str
    netns: str
    netns_ino: int
    ifindex: int
    device: str
    role: str
    node: str
    pod: str | None = None
    start_dir: int | None = None  # a packet of the traced flows starts tracking here, in this direction
    end: bool = False  # tracking that ends after this point counts towards end-to-end


@dataclass(frozen=True)
class Direction:
    dir: int
    src_pod: str
    dst_pod: str
    src_ip: str
    dst_ip: str


@dataclass(frozen=True)
class ExpectedHop:
    src: int  # point id where the hop starts
    dst: int  # point id where it ends
    dir: int
    seq: int  # 1-based position in the direction's chain
    role: str
    in_e2e: bool  # part of the first-to-last-point time (socket delivery comes after the path's end)


@dataclass(frozen=True)
class Plan:
    points: tuple[Point, ...]
    expected: tuple[ExpectedHop, ...]
    directions: tuple[Direction, ...]
    shared: tuple[ExpectedHop, ...] = ()  # expected hops whose pair another direction already labels


def _pod_points(pod: Pod, events: tuple[str, ...]) -> list[Point]:
    ino = netns_inode(pod.netns)
    pts = [Point(ev, pod.netns, ino, d.ifindex, d.name, d.role, pod.node, pod.name)
           for d in pod.devices for ev in events]
    pts.append(Point("copy", pod.netns, ino, 0, "socket", "socket", pod.node, pod.name))
    return pts


def all_points(topo: Topology, events: tuple[str, ...] = DEFAULT_EVENTS, node_sockets: bool = True) -> list[Point]:
    """A point per device and event, plus each namespace's socket layer (copy), each (netns, ifindex, event) once.

    Node namespaces get a socket point too when `node_sockets` (pod-to-host and host-network traffic is delivered
    there; other paths never are, and every point costs a slot in the kernel's device table). The host model's
    endpoints share their node's namespace, so the first point of a key wins: the kernel keeps one per key.
    """
    pts: list[Point] = []
    for node in topo.nodes:
        ino = netns_inode(node.netns)
        pts += [Point(ev, node.netns, ino, d.ifindex, d.name, d.role, node.name) for d in node.devices
                for ev in events]
        if node_sockets:
            pts.append(Point("copy", node.netns, ino, 0, "socket", "socket", node.name))
    for pod in topo.pods:
        pts += _pod_points(pod, events)
    seen: set[tuple[int, int, str]] = set()
    unique = []
    for p in pts:
        key = (p.netns_ino, p.ifindex, p.event)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def resolve(step: Step, src: Pod, dst: Pod, topo: Topology) -> tuple[str, str, str]:
    """(netns, device name, event) of a chain step for a packet going from src to dst."""
    pod = src if step.place in ("src_pod", "src_node") else dst
    if step.device == "socket":
        return pod.netns, "socket", step.event
    if step.place.endswith("_pod"):
        devs = [d for d in pod.devices if d.role == step.device]
        if len(devs) != 1:
            raise CniprofError(f"pod {pod.name} has {len(devs)} devices of role {step.device}")
        return pod.netns, devs[0].name, step.event
    node = topo.node(pod.node)
    if step.device == "host_veth":
        if not pod.host_veth:
            raise CniprofError(f"{pod.name} has no host veth, which the chain's {step.place} step needs")
        return node.netns, pod.host_veth, step.event
    devs = node.by_role(step.device)
    if len(devs) != 1:
        raise CniprofError(f"node {node.name} has {len(devs)} devices of role {step.device}")
    return node.netns, devs[0].name, step.event


def _endpoint(topo: Topology, ref: str | Pod) -> Pod:
    return ref if isinstance(ref, Pod) else topo.pod(ref)


def build_plan(topo: Topology, chain: Chain, src_name: str | Pod, dst_name: str | Pod,
          events: tuple[str, ...] = DEFAULT_EVENTS) -> Plan:
    """The points, labelled expected hops and directions of tracing `chain` between two endpoints.

    src/dst are pod names or Pods (pod-to-host passes `topo.host_endpoint(node)`, which is not in topo.pods).
    Direction 1 follows `chain.steps_for(1)` (the mirrored chain, or the path's own reply chain). A hop whose
    pair of points is already expected in direction 0 (same-node macvlan: both directions cross the parent's
    rx -> receive) is listed in `Plan.shared` instead, since the kernel keeps one histogram per pair.
    """
    src, dst = _endpoint(topo, src_name), _endpoint(topo, dst_name)
    # the chain as seen with these events only (e.g. without rx, veth xmit and backlog are one hop)
    chain = chain.restricted(set(events) | {"copy"})
    used = {s.event for d in (0, 1) for s in chain.steps_for(d) if s.event != "copy"}
    node_sockets = any(s.device == "socket" and s.place.endswith("_node")
                       for d in (0, 1) for s in chain.steps_for(d))
    pts = all_points(topo, tuple(sorted(set(events) | used)), node_sockets=node_sockets)
    index = {(p.netns, p.device, p.event): i for i, p in enumerate(pts)}
    expected: list[ExpectedHop] = []
    shared: list[ExpectedHop] = []
    directions = []
    flags: dict[int, dict] = {}
    path_ids: list[list[int]] = []
    for d, (a, b) in enumerate(((src, dst), (dst, src))):
        steps = chain.steps_for(d)
        directions.append(Direction(d, a.name, b.name, a.ip, b.ip))
        ids = []
        for step in steps:
            key = resolve(step, a, b, topo)
            if key not in index:
                raise CniprofError(f"the {chain.path} chain needs {key[1]} ({key[2]}) in {key[0]}, "
                                   "which the topology lacks")
            ids.append(index[key])
        # the path ends at the last point before socket delivery
        last = max(i for i, s in enumerate(steps) if s.device != "socket")
        if any(ids[0] in other[1:] for other in path_ids):
            # a start point clears the tracking of packets that do not start there: it would cut the other path
            raise CniprofError(f"the {chain.path} chain starts direction {d} at a point the other direction "
                               "passes through; the directions cannot be told apart")
        path_ids.append(ids)
        flags.setdefault(ids[0], {})["start_dir"] = d
        flags.setdefault(ids[last], {})["end"] = True
        taken = {(h.src, h.dst) for h in expected}
        for seq in range(1, len(ids)):
            hop = ExpectedHop(ids[seq - 1], ids[seq], d, seq, steps[seq].hop_role, seq <= last)
            (shared if (hop.src, hop.dst) in taken else expected).append(hop)
    pts = [Point(**{**p.__dict__, **flags.get(i, {})}) for i, p in enumerate(pts)]
    return Plan(tuple(pts), tuple(expected), tuple(directions), tuple(shared))
