# SPDX-License-Identifier: Apache-2.0
"""Cilium: eBPF routing, no bridge and no iptables on the pod path. Each pod's veth has an `lxc<sha256>` host end
with tc programs on its ingress (traffic leaving the pod); the pod's /32 has a default route via the node's
router IP (cilium_host's address), whose neighbour entry is the lxc MAC. The programs (bpf/cilium_tc.bpf.c,
the lab's stand-in for Cilium's bpf_lxc/bpf_host/bpf_overlay) move packets between devices themselves:

- a pod on the same node: bpf_redirect_peer straight into its namespace;
- vxlan (Cilium's default tunnel mode): tunnel key (VNI = the sender's identity, outer destination = the owning
  node) and bpf_redirect to cilium_vxlan, an external (collect_md) VXLAN device on UDP 8472; on the other node
  cilium_vxlan's ingress program redirect_peers the decapsulated packet into the pod;
- native routing: FIB lookup and bpf_redirect_neigh out of eth0 (the kernel resolves the next hop's MAC); the
  other node's eth0 ingress program redirect_peers the packet into the pod.

What the probes see (read off the lab with `cniprof lab explore`): the node meets a pod's packet on the lxc
(rx, receive), and its next point is the device the program redirected to: no routing pass, no bridge. On the
receiving side bpf_redirect_peer switches the skb to the pod's eth0 *inside* the netif_receive_skb call of the
device whose ingress redirected it: no veth transmit, no pod backlog, and no event on the pod's eth0 at all, so
the path ends at that node device's `receive` (as macvlan's does), and socket delivery is the next point.
Same-node traffic never leaves the sender's lxc receive. Traffic for the node itself is not the programs'
business: it goes up the node's stack, and the reply takes the node's /32 route to the pod's lxc.
"""

from __future__ import annotations

from cniprof.cni.model import FROM_POD, TO_NODE_STACK, TO_POD, Chain, Model, Step, across

_INTO_POD = Step("dst_pod", "socket", "copy", "bpf redirect_peer + socket delivery")
_CROSS_NODE_VXLAN = Chain("cross-node", (*FROM_POD, *across("bpf tunnel redirect", "vxlan", "vxlan"), _INTO_POD))
_CROSS_NODE_NATIVE = Chain("cross-node", (*FROM_POD, *across("bpf fib + redirect_neigh"), _INTO_POD))
_SAME_NODE = Chain("same-node", (*FROM_POD, _INTO_POD))
# pod -> its node's underlay address: the lxc program passes it up the node's stack; the reply takes the /32
_POD_TO_HOST = Chain("pod-to-host", (*FROM_POD, TO_NODE_STACK), reverse=(Step("dst_node", "host_veth", "queue"),
                                                                       *TO_POD))

_COMMON = "no bridge, no iptables: lxc veths with tc BPF, bpf_redirect_peer into pods"
_REQUIRES = (("tc BPF classifiers", "CONFIG_NET_CLS_BPF"), ("clsact qdiscs", "CONFIG_NET_SCH_INGRESS"))
# Cilium replaces kube-proxy with BPF service load balancing; with kube-proxy it falls back to routing through the
# node's stack. The lab's programs do neither: their redirects bypass the nodes' conntrack, so a service reply
# would reach the client un-NATed.
_NO_SERVICES = ("the lab's Cilium datapath has no service load balancing (Cilium's kube-proxy replacement), and "
                "its redirects bypass kube-proxy's iptables rules")

VXLAN = Model(
    cni="cilium",
    mode="vxlan",
    description=f"Cilium VXLAN tunnel: {_COMMON}, cilium_vxlan (collect_md, UDP 8472, VNI = identity), MTU 1450",
    chains=(_CROSS_NODE_VXLAN, _SAME_NODE, _POD_TO_HOST),
    requires=(*_REQUIRES, ("VXLAN devices", "CONFIG_VXLAN")),
    no_services=_NO_SERVICES,
)

NATIVE = Model(
    cni="cilium",
    mode="native",
    description=f"Cilium native routing: {_COMMON}, bpf_redirect_neigh out of eth0 via the other node's route",
    chains=(_CROSS_NODE_NATIVE, _SAME_NODE, _POD_TO_HOST),
    requires=_REQUIRES,
    no_services=_NO_SERVICES,
)

MODELS = {"vxlan": VXLAN, "native": NATIVE}
DEFAULT_MODE = "vxlan"  # as Cilium's Helm chart defaults (routingMode: tunnel, tunnelProtocol: vxlan)
