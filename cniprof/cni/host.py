# SPDX-License-Identifier: Apache-2.0
"""Host network: no CNI at all. The traffic runs between the node namespaces themselves over the underlay; this
is the physical baseline every CNI is compared against (whatever a CNI adds shows up as hops this chain lacks).

The endpoints ("pods") are the nodes: src_node and dst_node are the two ends' own namespaces.
"""

from __future__ import annotations

from cniprof.cni.model import Chain, Model, Step, across

# the endpoints are the nodes: the path starts at the source node's underlay queue (no first role)
_CROSS_NODE = Chain("cross-node", (*across(""), Step("dst_node", "socket", "copy", "socket delivery")))

NETWORK = Model(
    cni="host",
    mode="network",
    description="host network: node to node over the underlay (eth0, MTU 1500), no pod devices",
    chains=(_CROSS_NODE,),
    notes="host network: the endpoints are the nodes themselves",
    # measured: a ClusterIP from a node namespace is "Network is unreachable" (no route to the service CIDR)
    no_services="the host baseline has no pods and no route to a service CIDR: it is compared on its "
                "cross-node path",
)

MODELS = {"network": NETWORK}
DEFAULT_MODE = "network"
