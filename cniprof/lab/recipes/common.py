# SPDX-License-Identifier: Apache-2.0
"""The layout every recipe starts from (two nodes joined by an underlay, two pods per node) and the building
blocks several CNIs share: the underlay veth, a veth pod, and reading the result back as a Topology.

Addressing is the same across models on purpose (node N: underlay 192.168.77.N, pods 10.244.N.2 and .3), so
that traces of different CNIs differ only in the datapath, not in names or addresses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from cniprof.cni.topology import LAB_NETNS_PREFIX, Device, Node, Pod, Topology
from cniprof.lab.nsutil import RTPROT_BOOT, index, ipr, mac

UNDERLAY_DEV = "eth0"


@dataclass(frozen=True)
class PodSpec:
    name: str
    ip: str
    veth: str = ""  # host-side veth name; "" = `veth-<name>` (the bridge plugin's style is random, ours readable)

    @property
    def host_veth(self) -> str:
        return self.veth or f"veth-{self.name}"


@dataclass(frozen=True)
class NodeSpec:
    """One node: node N owns 10.244.N.0/24 (a /26 block for Calico), its gateway/VTEP addresses derive from N."""

    name: str
    index: int
    underlay_ip: str
    pods: tuple[PodSpec, ...]
    underlay_prefixlen: int = 24

    @property
    def netns(self) -> str:
        return f"{LAB_NETNS_PREFIX}{self.index}"

    @property
    def pod_cidr(self) -> str:
        return f"10.244.{self.index}.0/24"

    @property
    def gateway(self) -> str:
        return f"10.244.{self.index}.1"

    @property
    def vtep_ip(self) -> str:
        return f"10.244.{self.index}.0"

    def pod_netns(self, pod: PodSpec) -> str:
        return f"{self.netns}-{pod.name}"


def two_nodes(pod_ips: Iterable[str] | None = None,
              veth_name: Callable[[str], str] | None = None) -> tuple[NodeSpec, NodeSpec]:
    """node1 (pod-a, pod-b) and node2 (pod-c, pod-d); pod_ips overrides the four pod addresses in that order,
    veth_name(pod) names the host veths as the CNI does (default `veth-<pod>`)."""
    ips = list(pod_ips or ("10.244.1.2", "10.244.1.3", "10.244.2.2", "10.244.2.3"))

    def pod(name: str, ip: str) -> PodSpec:
        return PodSpec(name, ip, veth_name(name) if veth_name else "")

    return (
        NodeSpec("node1", 1, "192.168.77.1", (pod("pod-a", ips[0]), pod("pod-b", ips[1]))),
        NodeSpec("node2", 2, "192.168.77.2", (pod("pod-c", ips[2]), pod("pod-d", ips[3]))),
    )


def create_namespaces(ns, nodes: Sequence[NodeSpec], forward: bool = True, pods: bool = True) -> None:
    """Node namespaces first, then pod namespaces (the order `Topology.namespaces()` lists them)."""
    for node in nodes:
        ns.create(node.netns, forward=forward)
    if pods:
        for node in nodes:
            for pod in node.pods:
                ns.create(node.pod_netns(pod))


def underlay(nodes: Sequence[NodeSpec]) -> None:
    """The "physical" network: one veth pair, eth0 on both ends, created straight into the node namespaces."""
    first, second = nodes
    with ipr(first.netns) as sock:
        sock.link(
            "add", ifname=UNDERLAY_DEV, kind="veth", peer={"ifname": UNDERLAY_DEV, "net_ns_fd": second.netns}
        )
    for node in nodes:
        with ipr(node.netns) as sock:
            idx = index(sock, UNDERLAY_DEV)
            sock.addr("add", index=idx, address=node.underlay_ip, prefixlen=node.underlay_prefixlen)
            sock.link("set", index=idx, state="up")


def veth_pod(node: NodeSpec, pod: PodSpec, mtu: int, *, master: str | None = None, prefixlen: int = 24,
             gateway: str | None = None) -> None:
    """What the bridge CNI plugin does: veth pair, host end (on `master` if given), pod end eth0 with address
    and a default route via `gateway` (node.gateway when None)."""
    pod_ns = node.pod_netns(pod)
    with ipr(node.netns) as sock:
        sock.link(
            "add",
            ifname=pod.host_veth,
            kind="veth",
            mtu=mtu,
            peer={"ifname": "eth0", "net_ns_fd": pod_ns, "mtu": mtu},
        )
        hv = index(sock, pod.host_veth)
        if master:
            sock.link("set", index=hv, master=index(sock, master))
        sock.link("set", index=hv, state="up")
    with ipr(pod_ns) as sock:
        eth0 = index(sock, "eth0")
        sock.addr("add", index=eth0, address=pod.ip, prefixlen=prefixlen)
        sock.link("set", index=eth0, state="up")
        sock.route("add", dst="0.0.0.0/0", gateway=gateway or node.gateway, oif=eth0, proto=RTPROT_BOOT)


@dataclass(frozen=True)
class Layout:
    """What `collect` reads back: the named node devices (name, role) and the role of each pod's eth0."""

    node_devices: tuple[tuple[str, str], ...]
    pod_role: str = "pod_veth"
    host_veths: bool = True  # pods have a host-side veth in the node namespace
    host_ips: dict[str, str] = field(default_factory=dict)  # node -> pod-to-host target; default: underlay IP


def collect(cni: str, mode: str, nodes: Sequence[NodeSpec], layout: Layout) -> Topology:
    """Read back the ifindexes the kernel assigned and describe the result."""
    topo_nodes: list[Node] = []
    topo_pods: list[Pod] = []
    for node in nodes:
        with ipr(node.netns) as sock:
            named = list(layout.node_devices)
            if layout.host_veths:
                named += [(p.host_veth, "host_veth") for p in node.pods]
            devices = tuple(Device(n, role, index(sock, n), node.netns) for n, role in named)
        topo_nodes.append(Node(node.name, node.netns, devices))
        for pod in node.pods:
            pod_ns = node.pod_netns(pod)
            with ipr(pod_ns) as sock:
                eth0 = Device("eth0", layout.pod_role, index(sock, "eth0"), pod_ns)
            topo_pods.append(
                Pod(pod.name, node.name, pod_ns, pod.ip, pod.host_veth if layout.host_veths else "", (eth0,))
            )
    underlay_ips = {n.name: n.underlay_ip for n in nodes if n.underlay_ip}
    return Topology(
        cni=cni,
        mode=mode,
        nodes=tuple(topo_nodes),
        pods=tuple(topo_pods),
        underlay_ips=underlay_ips,
        host_ips=dict(layout.host_ips) or dict(underlay_ips),
    )


def vtep(node: NodeSpec, name: str, vni: int, port: int, mtu: int, address: str) -> str:
    """A VXLAN tunnel endpoint on node's underlay device (no learning: the CNI programs the FDB), with address/32,
    up; returns its MAC (random per build, read from the kernel), which the other nodes' FDB entries need."""
    with ipr(node.netns) as sock:
        sock.link("add", ifname=name, kind="vxlan", vxlan_id=vni, vxlan_local=node.underlay_ip,
                  vxlan_link=index(sock, UNDERLAY_DEV), vxlan_port=port, vxlan_learning=0, mtu=mtu)
        vx = index(sock, name)
        sock.addr("add", index=vx, address=address, prefixlen=32)
        sock.link("set", index=vx, state="up")
        return mac(sock, vx)
