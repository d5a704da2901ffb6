# SPDX-License-Identifier: Apache-2.0
"""The reference CNI `bridge` plugin on one node: pods' veths on a cni0 bridge that is also their gateway.

It is the pod side of flannel too (flanneld delegates pod wiring to this plugin), so the same-node and
pod-to-host chains below are flannel's as well. There is no cross-node datapath: the plugin leaves routing
between nodes to someone else, which is exactly what flannel, Calico and Cilium add.

Chains were read off the lab with every point registered and no expected hop (`cniprof lab explore`).
"""

from __future__ import annotations

from cniprof.cni.model import FROM_POD, TO_NODE_STACK, TO_POD, Chain, Model, Step

SAME_NODE = Chain("same-node", (*FROM_POD, Step("dst_node", "host_veth", "queue", "bridge forward"), *TO_POD))

# pod -> its node's own address: bridged up to cni0, which delivers locally; the reply is routed out of cni0
POD_TO_HOST = Chain(
    path="pod-to-host",
    steps=(*FROM_POD, Step("dst_node", "bridge", "receive", "bridge input"), TO_NODE_STACK),
    reverse=(Step("src_node", "bridge", "queue"), Step("dst_node", "host_veth", "queue", "bridge xmit"), *TO_POD),
)

BRIDGE = Model(
    cni="bridge",
    mode="bridge",
    description="CNI bridge plugin: one node, pods on cni0 (the pods' gateway, 10.244.1.1), MTU 1500",
    chains=(SAME_NODE, POD_TO_HOST),
    requires=(("bridge devices", "CONFIG_BRIDGE"),),
    notes="one node: the bridge plugin has no datapath between nodes",
)

MODELS = {"bridge": BRIDGE}
DEFAULT_MODE = "bridge"
