# SPDX-License-Identifier: Apache-2.0
"""The CNI `macvlan` plugin in bridge mode: each pod's eth0 is a macvlan device on its node's underlay NIC, with an
address on the underlay subnet (192.168.77.0/24). No veth, no bridge, no routing on the node.

What the probes can see: the pod's macvlan transmit goes straight to the parent (cross-node: queued on the
node's eth0; same-node: bridged inside the macvlan driver, which hands the frame to the parent's receive path).
On receive, the macvlan rx handler re-targets the skb from the parent to the pod's macvlan *within* the same
netif_receive_skb call, so the pod's own `rx`/`receive` events never fire: the path ends at the node's eth0
`receive` (from there the packet is in the pod's stack), and socket delivery is the next point.

Pod-to-host is not a path here: a macvlan device cannot talk to its own parent (the driver delivers frames
between macvlans and to the wire, never to the lower device's stack), a known macvlan limitation that real
deployments work around with an extra macvlan interface on the host.
"""

from __future__ import annotations

from cniprof.cni.model import Chain, Model, Step, across

_INTO_POD = Step("dst_pod", "socket", "copy", "macvlan rx + socket delivery")
_CROSS_NODE = Chain("cross-node", (Step("src_pod", "macvlan", "queue"),
                                   *across("macvlan xmit", first_place="src_node"), _INTO_POD))
_SAME_NODE = Chain(
    path="same-node",
    steps=(
        Step("src_pod", "macvlan", "queue"),
        Step("src_node", "underlay", "rx", "macvlan bridge"),
        Step("dst_node", "underlay", "receive", "parent backlog"),
        _INTO_POD,
    ),
)

BRIDGE = Model(
    cni="macvlan",
    mode="bridge",
    description="macvlan (bridge mode): pods' eth0 are macvlans on the node's eth0, addresses on the underlay",
    chains=(_CROSS_NODE, _SAME_NODE),
    requires=(("macvlan devices", "CONFIG_MACVLAN"),),
    notes="macvlan pods cannot reach their own node: the parent device never delivers to its macvlans' stack",
)

MODELS = {"bridge": BRIDGE}
DEFAULT_MODE = "bridge"
