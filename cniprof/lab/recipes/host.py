# SPDX-License-Identifier: Apache-2.0
"""Host network: two nodes joined by the underlay and nothing else. The endpoints are the nodes themselves."""

from __future__ import annotations

from cniprof.cni.topology import Topology
from cniprof.lab.nsutil import Namespaces
from cniprof.lab.recipes import common

NODES = (common.NodeSpec("node1", 1, "192.168.77.1", ()), common.NodeSpec("node2", 2, "192.168.77.2", ()))


def host_network(ns: Namespaces) -> Topology:
    """Each node's endpoint is a Pod-shaped view of the node namespace (named after the node, no devices), so
    traffic generators and the planner treat "node1 -> node2" like any pod pair."""
    common.create_namespaces(ns, NODES, forward=False, pods=False)
    common.underlay(NODES)
    layout = common.Layout(((common.UNDERLAY_DEV, "underlay"),), host_veths=False)
    topo = common.collect("host", "network", NODES, layout)
    endpoints = tuple(topo.host_endpoint(n.name) for n in topo.nodes)
    return Topology(topo.cni, topo.mode, topo.nodes, endpoints, topo.underlay_ips, topo.host_ips)


RECIPES = {("host", "network"): host_network}
