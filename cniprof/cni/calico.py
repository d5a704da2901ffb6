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

from cniprof.cni.model import FROM_POD, TO_NODE_STACK, TO_POD, Chain, Model, Step, across

_ROUTED_IN = (Step("dst_node", "host_veth", "queue", "ip forward"), *TO_POD)  # the /32 route to the pod's cali
_CROSS_NODE_BGP = Chain("cross-node", (*FROM_POD, *across("ip forward"), *_ROUTED_IN))
_CROSS_NODE_VXLAN = Chain("cross-node", (*FROM_POD, *across("ip forward", "vxlan", "vxlan"), *_ROUTED_IN))
_CROSS_NODE_IPIP = Chain("cross-node", (*FROM_POD, *across("ip forward", "tunnel", "ipip"), *_ROUTED_IN))
_SAME_NODE = Chain("same-node", (*FROM_POD, *_ROUTED_IN))
# pod -> its node's underlay address: routed up the cali veth into the node's stack; the reply takes the /32
_POD_TO_HOST = Chain("pod-to-host", (*FROM_POD, TO_NODE_STACK), reverse=(Step("dst_node", "host_veth", "queue"),
                                                                       *TO_POD))

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
