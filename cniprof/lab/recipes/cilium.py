# SPDX-License-Identifier: Apache-2.0
"""Cilium labs: two nodes wired as the Cilium CNI plugin and agent leave them, with the lab's own tc programs
(bpf/cilium_tc.bpf.c) as the datapath. No bridge, no iptables rule, no kube-proxy.

Per node (the agent): cilium_host/cilium_net, a veth pair whose cilium_host end holds the node's router IP
(10.244.N.1/32, the pods' gateway); in vxlan mode cilium_vxlan, an external (collect_md) VXLAN device on UDP
8472 with no fixed VNI, remote or lower device: the programs choose the outer destination per packet. Native
routing installs the other node's pod CIDR via its underlay address (auto-direct-node-routes), which the
programs' FIB lookup follows.

Per pod (the CNI plugin): a veth whose host end is `lxc` + 12 hex digits of sha256(<endpoint id>); the pod end
eth0 has the pod IP as a /32, `<router IP> dev eth0 scope link` and `default via <router IP>`, and a permanent
neighbour for the router IP with the lxc's MAC (Cilium's BPF ARP responder answers that ARP on a real node; the
lab pins the answer instead, so no ARP is ever on the traced path). The node routes each pod by a /32 on its lxc
with a permanent neighbour (endpoint routes): only traffic the node itself sends to a pod (pod-to-host replies)
uses them; pod traffic is moved by the programs.

Per node the agent's datapath: one cilium_tc object, its endpoint map (local pod IP -> lxc ifindex, MACs,
identity), ipcache (the other node's pods and pod CIDR -> its underlay IP) and mode, and its programs on the tc
ingress of every lxc, of eth0 and of cilium_vxlan (cniprof/lab/cilium_tc.py).
"""

from __future__ import annotations

import hashlib

from cniprof.cni.topology import Topology
from cniprof.lab import cilium_abi, cilium_tc
from cniprof.lab.nsutil import (
    NUD_PERMANENT,
    RT_SCOPE_LINK,
    RTPROT_BOOT,
    Namespaces,
    index,
    ipr,
    mac,
)
from cniprof.lab.recipes import common

POD_NAMESPACE = "default"
HOST_DEV, NET_DEV = "cilium_host", "cilium_net"
VXLAN_DEV = "cilium_vxlan"
VXLAN_PORT = 8472  # Cilium's tunnel port (the Linux kernel's historical VXLAN port, as flannel)
MTU = {"vxlan": 1450, "native": 1500}  # the pods' MTU: 50 bytes of VXLAN encapsulation in tunnel mode
FIRST_IDENTITY = 256  # Cilium allocates cluster-wide identities from 256 (lower ones are reserved)
MODES = {"vxlan": cilium_abi.CIL_MODE_VXLAN, "native": cilium_abi.CIL_MODE_NATIVE}


def lxc_name(pod: str, namespace: str = POD_NAMESPACE) -> str:
    """The host veth name Cilium gives an endpoint (Endpoint2IfName: "lxc" + sha256 hex, 15 characters)."""
    return "lxc" + hashlib.sha256(f"{namespace}/{pod}".encode()).hexdigest()[:12]


def router_ip(node: common.NodeSpec) -> str:
    """cilium_host's address: the pods' gateway (Cilium takes it from the node's pod CIDR)."""
    return node.gateway


def _host_device(node: common.NodeSpec) -> None:
    """cilium_host <-> cilium_net with the router IP as a /32, as the agent creates them."""
    with ipr(node.netns) as sock:
        sock.link("add", ifname=HOST_DEV, kind="veth", peer={"ifname": NET_DEV})
        host = index(sock, HOST_DEV)
        sock.addr("add", index=host, address=router_ip(node), prefixlen=32)
        for name in (NET_DEV, HOST_DEV):
            sock.link("set", index=index(sock, name), state="up")


def _vxlan_device(node: common.NodeSpec) -> int:
    """cilium_vxlan: external (collect_md) VXLAN on UDP 8472, no learning; returns its ifindex."""
    with ipr(node.netns) as sock:
        sock.link("add", ifname=VXLAN_DEV, kind="vxlan", vxlan_collect_metadata=1, vxlan_port=VXLAN_PORT,
                  vxlan_learning=0)
        vx = index(sock, VXLAN_DEV)
        sock.link("set", index=vx, state="up")
        return vx


def _pod(node: common.NodeSpec, pod: common.PodSpec, mtu: int, identity: int) -> cilium_tc.Endpoint:
    pod_ns = node.pod_netns(pod)
    with ipr(node.netns) as sock:
        sock.link("add", ifname=pod.host_veth, kind="veth", mtu=mtu,
                  peer={"ifname": "eth0", "net_ns_fd": pod_ns, "mtu": mtu})
        hv = index(sock, pod.host_veth)
        lxc_mac = mac(sock, hv)
    gw = router_ip(node)
    with ipr(pod_ns) as sock:
        eth0 = index(sock, "eth0")
        sock.addr("add", index=eth0, address=pod.ip, prefixlen=32)
        sock.link("set", index=eth0, state="up")
        sock.route("add", dst=gw, dst_len=32, oif=eth0, scope=RT_SCOPE_LINK, proto=RTPROT_BOOT)
        sock.route("add", dst="0.0.0.0/0", gateway=gw, oif=eth0, proto=RTPROT_BOOT)
        sock.neigh("replace", dst=gw, lladdr=lxc_mac, ifindex=eth0, state=NUD_PERMANENT)
        pod_mac = mac(sock, eth0)
    with ipr(node.netns) as sock:
        sock.link("set", index=hv, state="up")
        sock.route("replace", dst=pod.ip, dst_len=32, oif=hv, scope=RT_SCOPE_LINK, proto=RTPROT_BOOT)
        sock.neigh("replace", dst=pod.ip, lladdr=pod_mac, ifindex=hv, state=NUD_PERMANENT)
    return cilium_tc.Endpoint(pod.ip, hv, pod_mac, lxc_mac, identity)


def _build(ns: Namespaces, mode: str) -> Topology:
    nodes = common.two_nodes(veth_name=lxc_name)
    # ip_forward on: Cilium requires it (bpf_fib_lookup checks it on the lxc)
    common.create_namespaces(ns, nodes)
    common.underlay(nodes)
    identities = {pod.name: FIRST_IDENTITY + i for i, pod in enumerate(p for n in nodes for p in n.pods)}
    endpoints: dict[str, tuple[cilium_tc.Endpoint, ...]] = {}
    vxlan_ifindex: dict[str, int] = {}
    for node in nodes:
        _host_device(node)
        vxlan_ifindex[node.name] = _vxlan_device(node) if mode == "vxlan" else 0
        endpoints[node.name] = tuple(_pod(node, pod, MTU[mode], identities[pod.name]) for pod in node.pods)
    for node in nodes:
        peers = [peer for peer in nodes if peer is not node]
        if mode == "native":
            with ipr(node.netns) as sock:
                eth0 = index(sock, common.UNDERLAY_DEV)
                for peer in peers:
                    sock.route("replace", dst=peer.pod_cidr, gateway=peer.underlay_ip, oif=eth0, proto=RTPROT_BOOT)
        remotes = [cilium_tc.Remote(f"{p.ip}/32", peer.underlay_ip, identities[p.name]) for peer in peers
                   for p in peer.pods]
        remotes += [cilium_tc.Remote(peer.pod_cidr, peer.underlay_ip) for peer in peers]
        with ipr(node.netns) as sock:
            eth0 = index(sock, common.UNDERLAY_DEV)
        cilium_tc.install(cilium_tc.NodeDatapath(node.netns, MODES[mode], node.underlay_ip, eth0,
                                                 vxlan_ifindex[node.name], endpoints[node.name], tuple(remotes)))
    devices = [(common.UNDERLAY_DEV, "underlay")]
    if mode == "vxlan":
        devices.append((VXLAN_DEV, "vxlan"))
    return common.collect("cilium", mode, nodes, common.Layout(tuple(devices)))


def cilium_vxlan(ns: Namespaces) -> Topology:
    return _build(ns, "vxlan")


def cilium_native(ns: Namespaces) -> Topology:
    return _build(ns, "native")


RECIPES = {("cilium", "vxlan"): cilium_vxlan, ("cilium", "native"): cilium_native}
