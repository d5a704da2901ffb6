# SPDX-License-Identifier: Apache-2.0
"""Flannel labs: two nodes as flanneld and the CNI bridge plugin set them up, with the vxlan or host-gw backend."""

from __future__ import annotations

from cniprof.cni.topology import Topology
from cniprof.lab.nsutil import (
    NTF_SELF,
    NUD_PERMANENT,
    RTNH_F_ONLINK,
    RTPROT_BOOT,
    Namespaces,
    index,
    ipr,
)
from cniprof.lab.recipes import common

FLANNEL_NODES = common.two_nodes()
BRIDGE_DEV = "cni0"
VXLAN_DEV = "flannel.1"
VXLAN_VNI = 1
VXLAN_PORT = 8472
POD_MTU = 1450  # 1500 underlay - 50 bytes of VXLAN encapsulation, what flannel configures
HOST_GW_MTU = 1500  # host-gw adds no header: the underlay's MTU


def flannel_vxlan(ns: Namespaces) -> Topology:
    """Two nodes as flanneld (vxlan backend) and the CNI bridge plugin set them up."""
    nodes = FLANNEL_NODES
    common.create_namespaces(ns, nodes)
    common.underlay(nodes)
    macs = {node.name: _node_devices(node) for node in nodes}
    for node in nodes:
        _flannel_peers(node, [(peer, macs[peer.name]) for peer in nodes if peer is not node])
        for pod in node.pods:
            _pod(node, pod)
    layout = common.Layout(((common.UNDERLAY_DEV, "underlay"), (BRIDGE_DEV, "bridge"), (VXLAN_DEV, "vxlan")))
    return common.collect("flannel", "vxlan", nodes, layout)


def flannel_host_gw(ns: Namespaces) -> Topology:
    """host-gw backend: cni0 per node and, per remote lease, `<subnet> via <node underlay IP> dev eth0`."""
    nodes = FLANNEL_NODES
    common.create_namespaces(ns, nodes)
    common.underlay(nodes)
    for node in nodes:
        _bridge(node)
    for node in nodes:
        with ipr(node.netns) as sock:
            eth0 = index(sock, common.UNDERLAY_DEV)
            for peer in nodes:
                if peer is not node:
                    sock.route("replace", dst=peer.pod_cidr, gateway=peer.underlay_ip, oif=eth0, proto=RTPROT_BOOT)
        for pod in node.pods:
            common.veth_pod(node, pod, HOST_GW_MTU, master=BRIDGE_DEV)
    layout = common.Layout(((common.UNDERLAY_DEV, "underlay"), (BRIDGE_DEV, "bridge")))
    return common.collect("flannel", "host-gw", nodes, layout)


def _bridge(node: common.NodeSpec) -> None:
    """cni0 with the node's gateway address, as the bridge plugin (isGateway) creates it."""
    with ipr(node.netns) as sock:
        sock.link("add", ifname=BRIDGE_DEV, kind="bridge")
        br = index(sock, BRIDGE_DEV)
        sock.addr("add", index=br, address=node.gateway, prefixlen=24)
        sock.link("set", index=br, state="up")


def _node_devices(node: common.NodeSpec) -> str:
    """cni0 bridge and the flannel.1 VTEP of one node; returns the VTEP MAC the other nodes must learn."""
    _bridge(node)
    return common.vtep(node, VXLAN_DEV, VXLAN_VNI, VXLAN_PORT, POD_MTU, node.vtep_ip)


def _flannel_peers(node: common.NodeSpec, peers: list[tuple[common.NodeSpec, str]]) -> None:
    """What flanneld programs per remote subnet lease: neighbour, fdb entry, onlink route (in that order)."""
    with ipr(node.netns) as sock:
        vx = index(sock, VXLAN_DEV)
        for peer, peer_mac in peers:
            # ARP answer for the peer VTEP (so the kernel never ARPs over VXLAN)
            sock.neigh("replace", dst=peer.vtep_ip, lladdr=peer_mac, ifindex=vx, state=NUD_PERMANENT)
            # which underlay IP owns that VTEP MAC
            sock.fdb(
                "replace", ifindex=vx, lladdr=peer_mac, dst=peer.underlay_ip, state=NUD_PERMANENT, flags=NTF_SELF
            )
            # the peer's pod subnet, via its VTEP address, which is not on any local subnet: onlink
            sock.route(
                "replace",
                dst=peer.pod_cidr,
                gateway=peer.vtep_ip,
                oif=vx,
                flags=RTNH_F_ONLINK,
                proto=RTPROT_BOOT,
            )


def _pod(node: common.NodeSpec, pod: common.PodSpec) -> None:
    """What the bridge CNI plugin does: veth pair, host end on cni0, pod end eth0 with address and route."""
    common.veth_pod(node, pod, POD_MTU, master=BRIDGE_DEV)


RECIPES = {("flannel", "vxlan"): flannel_vxlan, ("flannel", "host-gw"): flannel_host_gw}
