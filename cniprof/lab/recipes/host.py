# SPDX-License-Identifier: Apache-2.0
"""Host network: two nodes joined by the underlay and nothing else. The endpoints are the nodes themselves."""

from __future__ import annotations

from cniprof.cni.topology import Topology
from cniprof.lab.nsutil import Namespaces
from cniprof.lab.recipes.common import UNDERLAY_DEV, Layout, NodeSpec, collect, create_namespaces, underlay

NODES = (NodeSpec("node1", 1, "192.168.77.1", ()), NodeSpec("node2", 2, "192.168.77.2", ()))


def host_network(ns: Namespaces) -> Topology:
    """Each node's endpoint is a Pod-shaped view of the node namespace (named after the node, no devices), so
    traffic generators and the planner treat "node1 -> node2" like any pod pair."""
    create_namespaces(ns, NODES, forward=False, pods=False)
    underlay(NODES)
    topo = collect("host", "network", NODES, Layout(((UNDERLAY_DEV, "underlay"),), host_veths=False))
    endpoints = tuple(topo.host_endpoint(n.name) for n in topo.nodes)
    return Topology(topo.cni, topo.mode, topo.nodes, endpoints, topo.underlay_ips, topo.host_ips)


RECIPES = {("host", "network"): host_network}
