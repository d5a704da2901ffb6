# SPDX-License-Identifier: Apache-2.0
"""The reference CNI bridge plugin on one node: cni0 (isGateway, 10.244.1.1/24), pods pod-a and pod-b."""

from __future__ import annotations

from cniprof.cni.topology import Topology
from cniprof.lab.nsutil import Namespaces, index, ipr
from cniprof.lab.recipes import common

BRIDGE_DEV = "cni0"
MTU = 1500
NODE = common.NodeSpec("node1", 1, "", (common.PodSpec("pod-a", "10.244.1.2"),
                                         common.PodSpec("pod-b", "10.244.1.3")))


def bridge(ns: Namespaces) -> Topology:
    """No underlay: the node has nothing but cni0; the pods' gateway address is also the pod-to-host target."""
    common.create_namespaces(ns, (NODE,))
    with ipr(NODE.netns) as sock:
        sock.link("add", ifname=BRIDGE_DEV, kind="bridge")
        br = index(sock, BRIDGE_DEV)
        sock.addr("add", index=br, address=NODE.gateway, prefixlen=24)
        sock.link("set", index=br, state="up")
    for pod in NODE.pods:
        common.veth_pod(NODE, pod, MTU, master=BRIDGE_DEV)
    layout = common.Layout(((BRIDGE_DEV, "bridge"),), host_ips={NODE.name: NODE.gateway})
    return common.collect("bridge", "bridge", (NODE,), layout)


RECIPES = {("bridge", "bridge"): bridge}
