# SPDX-License-Identifier: Apache-2.0
"""Topology + model + a pod pair -> what the hop probe must watch.

Every lab device gets a point per default event (so hops off the expected path show up as unexpected), the
expected chain of each direction is resolved to point ids, and each expected hop is labelled once here; analysis
reads these labels from the snapshot instead of resolving the model again.
"""

from __future__ import annotations

from dataclasses import dataclass

from cniprof.cni.model import Chain, Step
from cniprof.errors import CniprofError
from cniprof.lab.topology import Pod, Topology, netns_inode
from cniprof.probes.hops import Direction, Point

# Each event a tracked packet passes costs a clock read and a histogram update (benchmarks/overhead.py), so the
# default is one point where a packet is handed to a device (queue) and one where a device hands it to the stack
# (receive). FULL_EVENTS adds netif_rx, which splits a veth transfer from the wait in the CPU backlog.
# net_dev_start_xmit is left out: on the noqueue devices of a CNI path it adds ~0.2 us of nothing; qdisc time
# still shows in the hop that starts at the device's queue point.
DEFAULT_EVENTS = ("queue", "receive")
FULL_EVENTS = ("queue", "rx", "receive")


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


def _pod_points(pod: Pod, events: tuple[str, ...]) -> list[Point]:
    ino = netns_inode(pod.netns)
    pts = [Point(ev, pod.netns, ino, d.ifindex, d.name, d.role, pod.node, pod.name)
           for d in pod.devices for ev in events]
    pts.append(Point("copy", pod.netns, ino, 0, "socket", "socket", pod.node, pod.name))
    return pts


def all_points(topo: Topology, events: tuple[str, ...] = DEFAULT_EVENTS) -> list[Point]:
    pts: list[Point] = []
    for node in topo.nodes:
        ino = netns_inode(node.netns)
        pts += [Point(ev, node.netns, ino, d.ifindex, d.name, d.role, node.name) for d in node.devices
                for ev in events]
    for pod in topo.pods:
        pts += _pod_points(pod, events)
    return pts


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
        return node.netns, pod.host_veth, step.event
    devs = node.by_role(step.device)
    if len(devs) != 1:
        raise CniprofError(f"node {node.name} has {len(devs)} devices of role {step.device}")
    return node.netns, devs[0].name, step.event


def build(topo: Topology, chain: Chain, src_name: str, dst_name: str,
          events: tuple[str, ...] = DEFAULT_EVENTS) -> Plan:
    src, dst = topo.pod(src_name), topo.pod(dst_name)
    chain = chain.restricted(set(events) | {"copy"})
    pts = all_points(topo, tuple(sorted(set(events) - {"copy"})))
    index = {(p.netns, p.device, p.event): i for i, p in enumerate(pts)}
    expected: list[ExpectedHop] = []
    directions = []
    flags: dict[int, dict] = {}
    for d, (a, b) in enumerate(((src, dst), (dst, src))):
        directions.append(Direction(d, a.name, b.name, a.ip, b.ip))
        ids = []
        for step in chain.steps:
            key = resolve(step, a, b, topo)
            if key not in index:
                raise CniprofError(f"the {chain.path} chain needs {key[1]} ({key[2]}) in {key[0]}, "
                                   "which the topology lacks")
            ids.append(index[key])
        # the path ends at the last point before socket delivery
        last = max(i for i, s in enumerate(chain.steps) if s.device != "socket")
        flags[ids[0]] = {"start_dir": d}
        flags[ids[last]] = {"end": True}
        for seq in range(1, len(ids)):
            expected.append(ExpectedHop(ids[seq - 1], ids[seq], d, seq, chain.steps[seq].hop_role, seq <= last))
    pts = [Point(**{**p.__dict__, **flags.get(i, {})}) for i, p in enumerate(pts)]
    return Plan(tuple(pts), tuple(expected), tuple(directions))
