# SPDX-License-Identifier: Apache-2.0
"""Flannel: pods on a cni0 bridge (the bridge plugin, see bridge.py) and one of two backends between nodes.

- vxlan (flannel's default): a flannel.1 VTEP per node (VNI 1, UDP 8472, MTU 1450); the other node's /24 is
  routed onlink via its VTEP address, with permanent neighbour and fdb entries (no ARP over the tunnel).
- host-gw: no tunnel at all; the other node's /24 is routed via its underlay address (nodes share an L2).

The chains below are the points a packet passes with the default probe events (queue, rx, receive, copy);
each hop_role names the work done between the previous point and this one. Same-node and pod-to-host traffic
never leave cni0, so both backends share the bridge plugin's chains.
"""

from __future__ import annotations

from cniprof.cni.bridge import POD_TO_HOST, SAME_NODE
from cniprof.cni.model import FROM_POD, TO_POD, Chain, Model, Step, across

_BRIDGED_OUT = (*FROM_POD, Step("src_node", "bridge", "receive", "bridge input"))
_BRIDGED_IN = (Step("dst_node", "bridge", "queue", "ip forward"), Step("dst_node", "host_veth", "queue", "bridge xmit"),
               *TO_POD)
_CROSS_NODE = Chain("cross-node", (*_BRIDGED_OUT, *across("ip forward", "vxlan", "vxlan"), *_BRIDGED_IN))
_CROSS_NODE_HOST_GW = Chain("cross-node", (*_BRIDGED_OUT, *across("ip forward"), *_BRIDGED_IN))

VXLAN = Model(
    cni="flannel",
    mode="vxlan",
    description="flannel VXLAN: cni0 bridge, flannel.1 VTEP (VNI 1, UDP 8472, MTU 1450), onlink routes",
    chains=(_CROSS_NODE, SAME_NODE, POD_TO_HOST),
    requires=(("bridge devices", "CONFIG_BRIDGE"), ("VXLAN devices", "CONFIG_VXLAN")),
)

HOST_GW = Model(
    cni="flannel",
    mode="host-gw",
    description="flannel host-gw: cni0 bridge, the other node's /24 routed via its underlay IP, no tunnel",
    chains=(_CROSS_NODE_HOST_GW, SAME_NODE, POD_TO_HOST),
    requires=(("bridge devices", "CONFIG_BRIDGE"),),
)

MODELS = {"vxlan": VXLAN, "host-gw": HOST_GW}
DEFAULT_MODE = "vxlan"
