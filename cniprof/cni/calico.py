# SPDX-License-Identifier: Apache-2.0
"""Calico: routed pods, no bridge. Each pod's veth has a `cali<hash>` host end with no address; the pod's only
route is `default via 169.254.1.1 dev eth0` (onlink), which the host answers by proxy ARP on the cali veth
(proxy_arp=1, proxy_delay=0). The node routes each local pod by a /32 `dev cali… scope link` with a permanent
neighbour entry (as Felix programs them), and the other node's /26 block by the mode:

- bgp (routed, "no encapsulation"): via the other node's underlay address (what BIRD installs, proto bird);
- vxlan: onlink via the other node's VTEP address on vxlan.calico (VNI 4096, UDP 4789, MTU 1450), with a
  permanent neighbour and fdb entry (Felix's "proto 80" routes);
- ipip (Calico's default): onlink via the other node's underlay address on tunl0 (IP-in-IP, MTU 1480). Needs
  CONFIG_NET_IPIP; its chain is written from the kernel's ipip path, not yet read off a lab.

The bgp and vxlan chains were read off the lab (`cniprof lab explore`). Without a bridge, the node meets the
packet on the cali veth (rx, receive) and routes it straight to the next device: one routing pass per node.
"""

from __future__ import annotations

from cniprof.cni.model import Chain, Model, Step

_FROM_POD = (
    Step("src_pod", "pod_veth", "queue"),
    Step("src_node", "host_veth", "rx", "pod veth xmit"),
    Step("src_node", "host_veth", "receive", "host veth backlog"),
)
_TO_POD = (
    Step("dst_pod", "pod_veth", "rx", "host veth xmit"),
    Step("dst_pod", "pod_veth", "receive", "pod backlog"),
    Step("dst_pod", "socket", "copy", "socket delivery"),
)

_CROSS_NODE_BGP = Chain(
    path="cross-node",
    steps=(
        *_FROM_POD,
        Step("src_node", "underlay", "queue", "ip forward"),
        Step("dst_node", "underlay", "rx", "underlay xmit"),
        Step("dst_node", "underlay", "receive", "underlay backlog"),
        Step("dst_node", "host_veth", "queue", "ip forward"),
        *_TO_POD,
    ),
)

_CROSS_NODE_VXLAN = Chain(
    path="cross-node",
    steps=(
        *_FROM_POD,
        Step("src_node", "vxlan", "queue", "ip forward"),
        Step("src_node", "underlay", "queue", "vxlan encap"),
        Step("dst_node", "underlay", "rx", "underlay xmit"),
        Step("dst_node", "underlay", "receive", "underlay backlog"),
        Step("dst_node", "vxlan", "receive", "vxlan decap"),
        Step("dst_node", "host_veth", "queue", "ip forward"),
        *_TO_POD,
    ),
)

_CROSS_NODE_IPIP = Chain(
    path="cross-node",
    steps=(
        *_FROM_POD,
        Step("src_node", "tunnel", "queue", "ip forward"),
        Step("src_node", "underlay", "queue", "ipip encap"),
        Step("dst_node", "underlay", "rx", "underlay xmit"),
        Step("dst_node", "underlay", "receive", "underlay backlog"),
        Step("dst_node", "tunnel", "receive", "ipip decap"),
        Step("dst_node", "host_veth", "queue", "ip forward"),
        *_TO_POD,
    ),
)

_SAME_NODE = Chain(
    path="same-node",
    steps=(
        *_FROM_POD,
        Step("dst_node", "host_veth", "queue", "ip forward"),
        *_TO_POD,
    ),
)

# pod -> its node's underlay address: routed up the cali veth into the node's stack; the reply takes the /32
_POD_TO_HOST = Chain(
    path="pod-to-host",
    steps=(*_FROM_POD, Step("dst_node", "socket", "copy", "socket delivery")),
    reverse=(Step("dst_node", "host_veth", "queue"), *_TO_POD),
)

_COMMON = "no bridge, cali veths with proxy ARP for 169.254.1.1, /32 routes per pod"

BGP = Model(
    cni="calico",
    mode="bgp",
    description=f"Calico BGP (routed): {_COMMON}, the other node's /26 via its underlay IP, MTU 1500",
    chains=(_CROSS_NODE_BGP, _SAME_NODE, _POD_TO_HOST),
)

VXLAN = Model(
    cni="calico",
    mode="vxlan",
    description=f"Calico VXLAN: {_COMMON}, vxlan.calico (VNI 4096, UDP 4789, MTU 1450) onlink routes",
    chains=(_CROSS_NODE_VXLAN, _SAME_NODE, _POD_TO_HOST),
    requires=(("VXLAN devices", "CONFIG_VXLAN"),),
)

IPIP = Model(
    cni="calico",
    mode="ipip",
    description=f"Calico IP-in-IP: {_COMMON}, tunl0 (MTU 1480) onlink routes via the underlay",
    chains=(_CROSS_NODE_IPIP, _SAME_NODE, _POD_TO_HOST),
    requires=(("IPIP tunnels (tunl0)", "CONFIG_NET_IPIP"),),
)

MODELS = {"ipip": IPIP, "bgp": BGP, "vxlan": VXLAN}
DEFAULT_MODE = "ipip"  # as Calico's manifests default (CALICO_IPV4POOL_IPIP=Always)
