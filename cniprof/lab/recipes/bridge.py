# SPDX-License-Identifier: Apache-2.0
"""The reference CNI bridge plugin on one node: cni0 (isGateway, 10.244.1.1/24), pods pod-a and pod-b."""

from __future__ import annotations

from cniprof.cni.topology import Topology
from cniprof.lab.nsutil import Namespaces, index, ipr
from cniprof.lab.recipes.common import Layout, NodeSpec, PodSpec, collect, create_namespaces, veth_pod

BRIDGE_DEV = "cni0"
MTU = 1500
NODE = NodeSpec("node1", 1, "", (PodSpec("pod-a", "10.244.1.2"), PodSpec("pod-b", "10.244.1.3")))


def bridge(ns: Namespaces) -> Topology:
    """No underlay: the node has nothing but cni0; the pods' gateway address is also the pod-to-host target."""
    create_namespaces(ns, (NODE,))
    with ipr(NODE.netns) as sock:
        sock.link("add", ifname=BRIDGE_DEV, kind="bridge")
        br = index(sock, BRIDGE_DEV)
        sock.addr("add", index=br, address=NODE.gateway, prefixlen=24)
        sock.link("set", index=br, state="up")
    for pod in NODE.pods:
        veth_pod(NODE, pod, MTU, master=BRIDGE_DEV)
    layout = Layout(((BRIDGE_DEV, "bridge"),), host_ips={NODE.name: NODE.gateway})
    return collect("bridge", "bridge", (NODE,), layout)


RECIPES = {("bridge", "bridge"): bridge}
