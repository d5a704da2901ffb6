# SPDX-License-Identifier: Apache-2.0
"""The CNI macvlan plugin (mode bridge, master eth0) on two nodes: pods get underlay addresses
(192.168.77.11/.12 on node1, .21/.22 on node2) on a macvlan of their node's eth0, moved into the pod as eth0."""

from __future__ import annotations

from cniprof.cni.topology import Topology
from cniprof.lab.nsutil import Namespaces, index, ipr
from cniprof.lab.recipes import common

MACVLAN_MODE = "bridge"
NODES = common.two_nodes(("192.168.77.11", "192.168.77.12", "192.168.77.21", "192.168.77.22"))


def macvlan(ns: Namespaces) -> Topology:
    """Nodes do not route or forward (the pods are on the wire themselves), so no ip_forward."""
    common.create_namespaces(ns, NODES, forward=False)
    common.underlay(NODES)
    for node in NODES:
        for pod in node.pods:
            _pod(node, pod)
    layout = common.Layout(((common.UNDERLAY_DEV, "underlay"),), pod_role="macvlan", host_veths=False)
    return common.collect("macvlan", "bridge", NODES, layout)


def _pod(node: common.NodeSpec, pod: common.PodSpec) -> None:
    """As the plugin does: create the macvlan in the node (its parent's namespace), move it, rename it eth0."""
    tmp = f"mv-{pod.name}"
    pod_ns = node.pod_netns(pod)
    with ipr(node.netns) as sock:
        sock.link("add", ifname=tmp, kind="macvlan", link=index(sock, common.UNDERLAY_DEV),
                  macvlan_mode=MACVLAN_MODE)
        sock.link("set", index=index(sock, tmp), net_ns_fd=pod_ns)
    with ipr(pod_ns) as sock:
        idx = index(sock, tmp)
        sock.link("set", index=idx, ifname="eth0")
        sock.addr("add", index=idx, address=pod.ip, prefixlen=node.underlay_prefixlen)
        sock.link("set", index=idx, state="up")


RECIPES = {("macvlan", "bridge"): macvlan}
