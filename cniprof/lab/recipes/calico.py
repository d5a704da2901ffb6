# SPDX-License-Identifier: Apache-2.0
"""Calico labs: two nodes wired as the Calico CNI plugin and Felix (and BIRD, in bgp mode) leave them.

Per pod (the CNI plugin): a veth whose host end is `cali` + 11 hex digits of sha1("<namespace>.<pod>") with the
MAC ee:ee:ee:ee:ee:ee and no address; the pod end eth0 has the pod IP as a /32, `169.254.1.1 dev eth0 scope link`
and `default via 169.254.1.1`. Per cali veth (Felix): proxy_arp=1 and proxy_delay=0 (the host answers the pod's
ARP for 169.254.1.1 at once), rp_filter=1, forwarding=1, a `/32 dev cali… scope link` route and a permanent
neighbour entry for the pod. Per node: its /26 block as a blackhole route, and the other node's block by mode.

Each node also gets a default route via an underlay router (UNDERLAY_ROUTER, which does not exist), as every
real node has one: proxy ARP answers only for addresses the host has a route to, so without it nobody answers
the pods' ARP for 169.254.1.1 (projectcalico/calico#3270). Only packets to unknown destinations would use it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import lazy_loader

from cniprof.cni.topology import Topology
from cniprof.lab import kernel
from cniprof.lab.nsutil import (
    NTF_SELF,
    NUD_PERMANENT,
    RT_SCOPE_LINK,
    RTN_BLACKHOLE,
    RTNH_F_ONLINK,
    RTPROT_BIRD,
    RTPROT_BOOT,
    Namespaces,
    index,
    ipr,
    mac,
    write_sysctl,
)
from cniprof.lab.recipes import common

if TYPE_CHECKING:
    import pyroute2
else:  # imported on first use: a command that does not need it does not wait for it
    pyroute2 = lazy_loader.load("pyroute2")

POD_NAMESPACE = "default"  # the Kubernetes namespace the cali names are hashed with
HOST_VETH_MAC = "ee:ee:ee:ee:ee:ee"
GATEWAY = "169.254.1.1"
VXLAN_DEV = "vxlan.calico"
VXLAN_VNI = 4096
VXLAN_PORT = 4789
IPIP_DEV = "tunl0"
MTU = {"bgp": 1500, "vxlan": 1450, "ipip": 1480}
RTPROT_FELIX = 80  # the protocol number Felix tags its routes with
UNDERLAY_ROUTER = "192.168.77.254"


def cali_name(pod: str, namespace: str = POD_NAMESPACE) -> str:
    """The host veth name Calico gives a pod (VethNameForWorkload)."""
    return "cali" + hashlib.sha1(f"{namespace}.{pod}".encode()).hexdigest()[:11]


def block(node: common.NodeSpec) -> str:
    """The node's IPAM block (Calico's default block size is /26)."""
    return f"10.244.{node.index}.0/26"


def tunnel_ip(node: common.NodeSpec) -> str:
    """The tunnel address Calico's IPAM gives vxlan.calico / tunl0: the first address of the node's block."""
    return f"10.244.{node.index}.0"


def _build(ns: Namespaces, mode: str, tunnel: Callable[[common.NodeSpec], str | None]) -> Topology:
    nodes = common.two_nodes(veth_name=cali_name)
    common.create_namespaces(ns, nodes)
    common.underlay(nodes)
    macs = {node.name: tunnel(node) for node in nodes}
    for node in nodes:
        for pod in node.pods:
            _pod(node, pod, MTU[mode])
        _routes(node, [(peer, macs[peer.name]) for peer in nodes if peer is not node], mode)
    devices = [(common.UNDERLAY_DEV, "underlay")]
    if mode == "vxlan":
        devices.append((VXLAN_DEV, "vxlan"))
    elif mode == "ipip":
        devices.append((IPIP_DEV, "tunnel"))
    return common.collect("calico", mode, nodes, common.Layout(tuple(devices)))


def calico_bgp(ns: Namespaces) -> Topology:
    return _build(ns, "bgp", lambda node: None)


def calico_vxlan(ns: Namespaces) -> Topology:
    return _build(ns, "vxlan", _vxlan_device)


def calico_ipip(ns: Namespaces) -> Topology:
    return _build(ns, "ipip", _ipip_device)


def _vxlan_device(node: common.NodeSpec) -> str:
    """vxlan.calico as Felix creates it; returns its MAC."""
    return common.vtep(node, VXLAN_DEV, VXLAN_VNI, VXLAN_PORT, MTU["vxlan"], tunnel_ip(node))


def _ipip_device(node: common.NodeSpec) -> None:
    """tunl0: the ipip module's fallback device, present in every namespace once the module is loaded; Calico
    creates it if absent, then sets MTU 1480 and the tunnel address."""
    with ipr(node.netns) as sock:
        if not sock.link_lookup(ifname=IPIP_DEV):
            try:
                sock.link("add", ifname=IPIP_DEV, kind="ipip")
            except pyroute2.NetlinkError as e:
                raise kernel.missing_error("calico:ipip", "IPIP tunnels (tunl0)", "CONFIG_NET_IPIP") from e
        tun = index(sock, IPIP_DEV)
        sock.link("set", index=tun, mtu=MTU["ipip"], state="up")
        sock.addr("add", index=tun, address=tunnel_ip(node), prefixlen=32)


def _routes(node: common.NodeSpec, peers: list[tuple[common.NodeSpec, str | None]], mode: str) -> None:
    """Own block blackholed (only its /32s are reachable); the peer's block by mode."""
    proto = RTPROT_BIRD if mode in ("bgp", "ipip") else RTPROT_FELIX
    ip, _, plen = block(node).partition("/")
    with ipr(node.netns) as sock:
        sock.route("replace", dst=ip, dst_len=int(plen), type=RTN_BLACKHOLE, proto=proto)
        eth0 = index(sock, common.UNDERLAY_DEV)
        sock.route("replace", dst="0.0.0.0/0", gateway=UNDERLAY_ROUTER, oif=eth0, proto=RTPROT_BOOT)
        for peer, peer_mac in peers:
            if mode == "bgp":
                sock.route("replace", dst=block(peer), gateway=peer.underlay_ip, oif=eth0, proto=proto)
            elif mode == "vxlan":
                vx = index(sock, VXLAN_DEV)
                sock.neigh("replace", dst=tunnel_ip(peer), lladdr=peer_mac, ifindex=vx, state=NUD_PERMANENT)
                sock.fdb("replace", ifindex=vx, lladdr=peer_mac, dst=peer.underlay_ip, state=NUD_PERMANENT,
                         flags=NTF_SELF)
                sock.route("replace", dst=block(peer), gateway=tunnel_ip(peer), oif=vx, flags=RTNH_F_ONLINK,
                           proto=proto)
            else:
                tun = index(sock, IPIP_DEV)
                sock.route("replace", dst=block(peer), gateway=peer.underlay_ip, oif=tun, flags=RTNH_F_ONLINK,
                           proto=proto)


def _pod(node: common.NodeSpec, pod: common.PodSpec, mtu: int) -> None:
    pod_ns = node.pod_netns(pod)
    with ipr(node.netns) as sock:
        sock.link("add", ifname=pod.host_veth, kind="veth", mtu=mtu, address=HOST_VETH_MAC,
                  peer={"ifname": "eth0", "net_ns_fd": pod_ns, "mtu": mtu})
    # Felix's per-interface settings, before the device is up (as it does on the interface's creation)
    for key, value in (("conf/{}/proxy_arp", "1"), ("neigh/{}/proxy_delay", "0"), ("conf/{}/rp_filter", "1"),
                       ("conf/{}/forwarding", "1")):
        write_sysctl(node.netns, "net/ipv4/" + key.format(pod.host_veth), value)
    with ipr(pod_ns) as sock:
        eth0 = index(sock, "eth0")
        sock.addr("add", index=eth0, address=pod.ip, prefixlen=32)
        sock.link("set", index=eth0, state="up")
        sock.route("add", dst=GATEWAY, dst_len=32, oif=eth0, scope=RT_SCOPE_LINK, proto=RTPROT_BOOT)
        sock.route("add", dst="0.0.0.0/0", gateway=GATEWAY, oif=eth0, proto=RTPROT_BOOT)
        pod_mac = mac(sock, eth0)
    with ipr(node.netns) as sock:
        hv = index(sock, pod.host_veth)
        sock.link("set", index=hv, state="up")
        sock.route("replace", dst=pod.ip, dst_len=32, oif=hv, scope=RT_SCOPE_LINK, proto=RTPROT_BOOT)
        sock.neigh("replace", dst=pod.ip, lladdr=pod_mac, ifindex=hv, state=NUD_PERMANENT)


RECIPES = {("calico", "bgp"): calico_bgp, ("calico", "vxlan"): calico_vxlan, ("calico", "ipip"): calico_ipip}
