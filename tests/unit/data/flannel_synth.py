# SPDX-License-Identifier: Apache-2.0
"""Synthetic flannel (VXLAN) cross-node snapshot: the chain, a topology in its JSON form, and the generator.

Run `.venv/bin/python tests/unit/data/flannel_synth.py` to regenerate flannel_cross_node.json. The snapshot has the
shape cniprof.probes.hops.HopProbe.snapshot() writes: a point per lab device and default event (plus each pod's
socket), expected hops labelled with dir/seq/role/in_e2e and a histogram, unexpected pairs with count and sum only,
and the end-to-end time from a direction's first point to its last point before socket delivery.

Per-packet latencies come from fixed-seed log-normal distributions; a packet's end-to-end time is the sum of its
hops, so the fixture is internally consistent. Built in, so that the tests have something true to find:
- pod-a→pod-c (TCP data), 1000 packets: 7 skip node1 cni0 receive (unexpected pair host veth receive → flannel.1
  queue); 3 are dropped at node1 eth0 queue (NOT_SPECIFIED); 2 go stale after node2 eth0 receive; 995 reach the
  socket.
- pod-c→pod-a (ACKs), 401 packets: all reach pod-a eth0 receive (the path's end), 1 is dropped there
  (TCP_OLD_DATA), 400 are consumed by TCP; an ACK carries no payload, so "socket delivery" sees 0 packets.
Not used at runtime: the real flannel model is cniprof/cni/flannel.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cniprof.analysis.histogram import Histogram
from cniprof.cni.model import Chain, Step

OUT = Path(__file__).with_name("flannel_cross_node.json")

CHAIN = Chain(
    "cross-node",
    (
        Step("src_pod", "pod_veth", "queue"),
        Step("src_node", "host_veth", "rx", "pod veth xmit"),
        Step("src_node", "host_veth", "receive", "host veth backlog"),
        Step("src_node", "bridge", "receive", "bridge input"),
        Step("src_node", "vxlan", "queue", "ip forward"),
        Step("src_node", "underlay", "queue", "vxlan encap"),
        Step("dst_node", "underlay", "rx", "underlay xmit"),
        Step("dst_node", "underlay", "receive", "underlay backlog"),
        Step("dst_node", "vxlan", "receive", "vxlan decap"),
        Step("dst_node", "bridge", "queue", "ip forward"),
        Step("dst_node", "host_veth", "queue", "bridge xmit"),
        Step("dst_pod", "pod_veth", "rx", "host veth xmit"),
        Step("dst_pod", "pod_veth", "receive", "pod backlog"),
        Step("dst_pod", "socket", "copy", "socket delivery"),
    ),
)
END = 12  # chain position of the path's last point (the last step before socket delivery)

# Topology in the shape of `lab status --json` (only what analysis reads).
TOPOLOGY = {
    "cni": "flannel",
    "mode": "vxlan",
    "pods": [
        {
            "name": "pod-a",
            "node": "node1",
            "netns": "cniprof-node1-pod-a",
            "ip": "10.244.1.2",
            "host_veth": "veth-pod-a",
        },
        {
            "name": "pod-c",
            "node": "node2",
            "netns": "cniprof-node2-pod-c",
            "ip": "10.244.2.2",
            "host_veth": "veth-pod-c",
        },
    ],
}
POD_NODE = {"pod-a": "node1", "pod-c": "node2"}
NODE_DEVICES = {  # name -> (role, ifindex)
    "node1": {
        "eth0": ("underlay", 2),
        "flannel.1": ("vxlan", 3),
        "cni0": ("bridge", 4),
        "veth-pod-a": ("host_veth", 5),
    },
    "node2": {
        "eth0": ("underlay", 2),
        "flannel.1": ("vxlan", 3),
        "cni0": ("bridge", 4),
        "veth-pod-c": ("host_veth", 5),
    },
}
INODE = {
    "cniprof-node1": 4026532301,
    "cniprof-node2": 4026532302,
    "cniprof-node1-pod-a": 4026532311,
    "cniprof-node2-pod-c": 4026532312,
}
EVENTS = ("queue", "rx", "receive")
PROGRAMS = [
    "on_dev_queue",
    "on_netif_rx",
    "on_netif_receive_skb",
    "on_copy",
    "on_consume_skb",
    "on_kfree_skb",
]

# Per-hop latency (median ns, log-normal sigma), for the chain's hops 1..13.
HOP_LATENCY = [
    (1_400, 0.25),  # pod veth xmit
    (3_800, 0.45),  # host veth backlog
    (900, 0.20),  # bridge input
    (2_300, 0.30),  # ip forward
    (2_900, 0.30),  # vxlan encap
    (1_700, 0.25),  # underlay xmit
    (4_600, 0.50),  # underlay backlog
    (3_100, 0.35),  # vxlan decap
    (1_900, 0.30),  # ip forward
    (1_000, 0.20),  # bridge xmit
    (1_200, 0.25),  # host veth xmit
    (3_600, 0.45),  # pod backlog
    (21_000, 0.60),  # socket delivery
]


def points() -> list[dict]:
    """Every lab device × default event, nodes first, then pods with their socket (as the probe planner does)."""
    pts: list[dict] = []

    def add(event: str, netns: str, ifindex: int, device: str, role: str, node: str, pod: str | None) -> None:
        pts.append(
            {
                "id": len(pts),
                "event": event,
                "netns": netns,
                "netns_ino": INODE[netns],
                "ifindex": ifindex,
                "device": device,
                "role": role,
                "node": node,
                "pod": pod,
                "start_dir": None,
                "end": False,
            }
        )

    for node, devices in NODE_DEVICES.items():
        for device, (role, ifindex) in devices.items():
            for ev in EVENTS:
                add(ev, f"cniprof-{node}", ifindex, device, role, node, None)
    for pod, node in POD_NODE.items():
        netns = f"cniprof-{node}-{pod}"
        for ev in EVENTS:
            add(ev, netns, 2, "eth0", "pod_veth", node, pod)
        add("copy", netns, 0, "socket", "socket", node, pod)
    return pts


def chain_ids(pts: list[dict], src: str, dst: str) -> list[int]:
    """Point ids of the chain for src → dst, found by (node, device, event) the way a person would read them."""
    index = {(p["netns"], p["device"], p["event"]): p["id"] for p in pts}
    ids = []
    for step in CHAIN.steps:
        pod = src if step.place.startswith("src") else dst
        node = POD_NODE[pod]
        if step.place.endswith("_pod"):
            netns, device = f"cniprof-{node}-{pod}", "socket" if step.device == "socket" else "eth0"
        else:
            netns = f"cniprof-{node}"
            device = next(d for d, (r, _) in NODE_DEVICES[node].items() if r == step.device)
        ids.append(index[(netns, device, step.event)])
    return ids


def _direction(
    rng: np.random.Generator,
    ids: list[int],
    n: int,
    skip: int,
    drop_at: tuple[int, ...],
    stale: int,
    copies: bool,
):
    """Simulate one direction. The first `skip` packets skip chain position 3 (cni0 receive); the next
    len(drop_at) are dropped at those positions; the next `stale` lose tracking after position 7; the rest end at
    the socket (copies) or are consumed without a copy (ACKs)."""
    lat = np.stack([rng.lognormal(np.log(med), sig, n) for med, sig in HOP_LATENCY]).round().astype(np.int64)
    hops: dict[tuple[int, int], list[int]] = {}
    e2e: list[int] = []
    ended = {"copy": 0, "free": 0, "drop": 0, "stale": 0, "unexpected": 0}
    drops: dict[int, int] = {}
    for i in range(n):
        path, vals = list(range(14)), [int(v) for v in lat[:, i]]
        if i < skip:
            path.remove(3)
            vals = vals[:2] + [vals[2] + vals[3]] + vals[4:]
            ended["unexpected"] += 1
        last, end = (len(path) - 1, "copy") if copies else (path.index(END), "free")
        j = i - skip
        if 0 <= j < len(drop_at):
            last, end = path.index(drop_at[j]), "drop"
            drops[ids[drop_at[j]]] = drops.get(ids[drop_at[j]], 0) + 1
        elif 0 <= j - len(drop_at) < stale:
            last, end = path.index(7), "stale"
        for k in range(last):
            hops.setdefault((ids[path[k]], ids[path[k + 1]]), []).append(vals[k])
        if last >= path.index(END):
            e2e.append(sum(vals[: path.index(END)]))
        ended[end] += 1
    return hops, e2e, ended, drops


def build() -> dict:
    rng = np.random.default_rng(20261126)
    pts = points()
    dirs = [
        ("pod-a", "pod-c", "10.244.1.2", "10.244.2.2", 1000, 7, (5, 5, 5), 2, True),
        ("pod-c", "pod-a", "10.244.2.2", "10.244.1.2", 401, 0, (END,), 0, False),
    ]
    hops, e2e, directions, drops = [], [], [], []
    counters = {
        "started": 0,
        "unexpected": 0,
        "stale": 0,
        "ended_copy": 0,
        "ended_free": 0,
        "ended_drop": 0,
        "sampled_candidates": 0,
    }
    odd: list[dict] = []
    for d, (src, dst, sip, dip, n, skip, drop_at, stale, copies) in enumerate(dirs):
        ids = chain_ids(pts, src, dst)
        pts[ids[0]]["start_dir"] = d
        pts[ids[END]]["end"] = True
        seen, times, ended, dropped = _direction(rng, ids, n, skip, drop_at, stale, copies)
        for seq in range(1, len(ids)):
            h = Histogram.from_values(seen.pop((ids[seq - 1], ids[seq]), []))
            hops.append(
                {
                    "from": ids[seq - 1],
                    "to": ids[seq],
                    "expected": True,
                    "dir": d,
                    "seq": seq,
                    "role": CHAIN.steps[seq].hop_role,
                    "in_e2e": seq <= END,
                    **h.to_entry(),
                }
            )
        for (a, b), vals in seen.items():  # the kernel keeps count and sum only for pairs off the chain
            odd.append(
                {
                    "from": a,
                    "to": b,
                    "expected": False,
                    "count": len(vals),
                    "sum_ns": sum(vals),
                    "buckets": {},
                }
            )
        e2e.append({"dir": d, **Histogram.from_values(times).to_entry()})
        directions.append({"dir": d, "src_pod": src, "dst_pod": dst, "src_ip": sip, "dst_ip": dip})
        for pid, count in dropped.items():
            reason = (2, "NOT_SPECIFIED") if copies else (16, "TCP_OLD_DATA")
            drops.append({"point": pid, "reason": reason[0], "reason_name": reason[1], "count": count})
        counters["started"] += n
        counters["sampled_candidates"] += n
        counters["unexpected"] += ended["unexpected"]
        counters["stale"] += ended["stale"]
        for k in ("copy", "free", "drop"):
            counters[f"ended_{k}"] += ended[k]
    return {
        "version": 1,
        "elapsed_s": 10.2,
        "points": pts,
        "hops": hops + odd,
        "e2e": e2e,
        "drops": drops,
        "counters": counters,
        "directions": directions,
        "programs": PROGRAMS,
    }


if __name__ == "__main__":
    OUT.write_text(json.dumps(build(), indent=1) + "\n")
    print(f"wrote {OUT}")
