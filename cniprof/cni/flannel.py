# SPDX-License-Identifier: Apache-2.0
"""Flannel's VXLAN backend: pods on a cni0 bridge, a flannel.1 VTEP (VNI 1, UDP 8472, MTU 1450) per node.

The chains below are the points a packet passes with the default probe events (queue, rx, receive, copy);
each hop_role names the work done between the previous point and this one.
"""

from __future__ import annotations

from cniprof.cni.model import Chain, Model, Step

_CROSS_NODE = Chain(
    path="cross-node",
    steps=(
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

_SAME_NODE = Chain(
    path="same-node",
    steps=(
        Step("src_pod", "pod_veth", "queue"),
        Step("src_node", "host_veth", "rx", "pod veth xmit"),
        Step("src_node", "host_veth", "receive", "host veth backlog"),
        Step("dst_node", "host_veth", "queue", "bridge forward"),
        Step("dst_pod", "pod_veth", "rx", "host veth xmit"),
        Step("dst_pod", "pod_veth", "receive", "pod backlog"),
        Step("dst_pod", "socket", "copy", "socket delivery"),
    ),
)

VXLAN = Model(
    cni="flannel",
    mode="vxlan",
    description="flannel VXLAN: cni0 bridge, flannel.1 VTEP (VNI 1, UDP 8472, MTU 1450), onlink routes",
    chains=(_CROSS_NODE, _SAME_NODE),
)

MODELS = {"vxlan": VXLAN}
DEFAULT_MODE = "vxlan"
