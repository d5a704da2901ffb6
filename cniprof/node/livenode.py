# SPDX-License-Identifier: Apache-2.0
"""What a live node's network namespace holds, read with netlink: its devices, and the pods behind its veths.

Why netlink and not names: a host veth's other end is only identified by the kernel, as the peer's ifindex
(IFLA_LINK) in the namespace whose id, *as this namespace numbers it*, is IFLA_LINK_NETNSID. Namespace ids are
per observer, so a name is found the way `ip netns list-id` does it: ask this namespace for the id it gives
each /run/netns/<name> (RTM_GETNSID with an fd, which reads and never assigns an id). Namespaces that are not
bind-mounted there (Docker's, a crashed runtime's) are still open by the processes inside them, so the
fallback asks the same question of /proc/<pid>/ns/net, one process per namespace inode.

Nothing is changed anywhere: links, addresses and ids are only read.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import lazy_loader

from cniprof import interrupts
from cniprof.cni.topology import NETNS_DIR, Device, Node, Pod, Topology
from cniprof.errors import EnvironmentProblem, UsageError

if TYPE_CHECKING:
    import pyroute2
else:  # imported on first use: a command that does not need it does not wait for it
    pyroute2 = lazy_loader.load("pyroute2")

if TYPE_CHECKING:
    from pyroute2 import IPRoute

# a namespace with no name: the one cniprof runs in. An absolute path works everywhere a name does
# (os.path.join keeps it, pyroute2 opens it as is) except `ip netns exec`.
SELF_NETNS = "/proc/self/ns/net"
NSID_NONE = 0xFFFFFFFF  # "no id assigned" (-1 as the kernel's u32)


@dataclass(frozen=True)
class Link:
    """One device as netlink reports it; `peer_netnsid` is None for a device whose peer is in this namespace."""

    name: str
    index: int
    kind: str  # IFLA_INFO_KIND: veth, bridge, vxlan, ipip, macvlan, ... ("" for physical NICs and lo)
    peer_index: int | None  # IFLA_LINK: a veth's peer, a vxlan's or macvlan's lower device
    peer_netnsid: int | None  # IFLA_LINK_NETNSID
    master: int | None
    up: bool
    ipv4: tuple[str, ...]  # "addr/prefixlen"
    vxlan_link: int | None = None  # IFLA_VXLAN_LINK: the device a VTEP sends through

    @property
    def addresses(self) -> tuple[str, ...]:
        return tuple(a.split("/")[0] for a in self.ipv4)


@dataclass(frozen=True)
class PodLink:
    """A pod found from its node: the namespace (a /run/netns name or /proc/<pid>/ns/net), its interface, and
    the host veth it hangs off (None for a macvlan pod, which has none)."""

    host_veth: Link | None
    netns: str
    name: str
    device: str
    ifindex: int
    ip: str
    role: str = "pod_veth"


@contextmanager
def netlink(netns: str | None) -> Iterator[IPRoute]:
    """A netlink socket in `netns` (None: our own namespace) for the block. flags=0: a mistyped name must not
    create one. A Ctrl-C or SIGTERM waits for the block to end (interrupts.deferred says why)."""
    with interrupts.deferred():
        try:
            ipr = pyroute2.IPRoute(netns=netns, flags=0) if netns else pyroute2.IPRoute()
        except FileNotFoundError:
            raise UsageError(f"network namespace {netns!r} does not exist "
                             f"(no {os.path.join(NETNS_DIR, netns or '')})") from None
        except PermissionError:
            raise EnvironmentProblem(f"entering network namespace {netns!r} needs root") from None
        except (OSError, UnicodeError) as e:  # a name no namespace can have: too long, a directory, not ASCII
            why = getattr(e, "strerror", None) or "not a network namespace name"
            raise UsageError(f"network namespace {(netns or '')[:80]!r}: {why}") from None
        try:
            yield ipr
        finally:
            ipr.close()


def _attr(msg, *path: str):
    for name in path[:-1]:
        msg = msg.get_attr(name) if msg is not None else None
    return msg.get_attr(path[-1]) if msg is not None else None


def read_links(ipr: IPRoute) -> list[Link]:
    """Every device of the socket's namespace with its IPv4 addresses, in ifindex order."""
    addrs: dict[int, list[str]] = {}
    for a in ipr.get_addr(family=socket.AF_INET):
        addrs.setdefault(a["index"], []).append(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
    out = []
    for msg in ipr.get_links():
        kind = _attr(msg, "IFLA_LINKINFO", "IFLA_INFO_KIND") or ""
        vxlan_link = _attr(msg, "IFLA_LINKINFO", "IFLA_INFO_DATA", "IFLA_VXLAN_LINK") if kind == "vxlan" else None
        out.append(Link(
            name=msg.get_attr("IFLA_IFNAME"),
            index=msg["index"],
            kind=kind,
            peer_index=msg.get_attr("IFLA_LINK"),
            peer_netnsid=msg.get_attr("IFLA_LINK_NETNSID"),
            master=msg.get_attr("IFLA_MASTER"),
            up=bool(msg["flags"] & 1),  # IFF_UP
            ipv4=tuple(addrs.get(msg["index"], ())),
            vxlan_link=vxlan_link,
        ))
    return sorted(out, key=lambda link: link.index)


def links_in(netns: str | None) -> list[Link]:
    with netlink(netns) as ipr:
        return read_links(ipr)


def _nsid(ipr: IPRoute, path: str) -> int | None:
    """The id the socket's namespace gives the namespace at `path`, None when it has none (or path is gone)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        reply = ipr.get_netnsid(fd=fd)
    except pyroute2.NetlinkError:
        return None
    finally:
        os.close(fd)
    nsid = reply.get("nsid") if isinstance(reply, dict) else None
    return None if nsid is None or nsid == NSID_NONE or nsid < 0 else int(nsid)


def _named_namespaces() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def _process_namespaces() -> Iterator[str]:
    """/proc/<pid>/ns/net, one per namespace (the lowest pid holding it)."""
    seen: set[int] = set()
    for entry in sorted((e for e in os.listdir("/proc") if e.isdigit()), key=int):
        path = f"/proc/{entry}/ns/net"
        try:
            ino = os.stat(path).st_ino
        except OSError:
            continue
        if ino not in seen:
            seen.add(ino)
            yield path


def resolve_nsids(ipr: IPRoute, wanted: Iterable[int]) -> dict[int, str]:
    """nsid (as the socket's namespace numbers it) -> a usable namespace path or name, for the ids wanted.

    /run/netns names first (what `ip netns list-id` prints); ids still unknown are looked for among the
    namespaces of running processes.
    """
    todo = set(wanted)
    out: dict[int, str] = {}
    for name in _named_namespaces():
        if not todo:
            return out
        nsid = _nsid(ipr, os.path.join(NETNS_DIR, name))
        if nsid in todo:
            out[nsid] = name
            todo.discard(nsid)
    for path in _process_namespaces() if todo else ():
        nsid = _nsid(ipr, path)
        if nsid in todo:
            out[nsid] = path
            todo.discard(nsid)
            if not todo:
                break
    return out


def host_veths(links: Iterable[Link]) -> list[Link]:
    """Veths whose peer is in another namespace and that carry no IPv4 address.

    A pod's host-side veth never has an address (the bridge, or the /32 route for Calico, does the work); a
    veth with an address is the node's own uplink (the lab's underlay is such a veth, and so is a node that
    is itself a container).
    """
    return [link for link in links if link.kind == "veth" and link.peer_netnsid is not None and not link.ipv4]


def pod_name(netns: str, node_netns: str | None) -> str:
    """A readable pod name: the namespace name without its node's prefix (the lab's `<node>-pod-a` -> pod-a),
    `pid-<n>` for a namespace known only through a process."""
    if netns.startswith("/proc/"):
        return f"pid-{netns.split('/')[2]}"
    if node_netns and netns.startswith(f"{node_netns}-"):
        return netns[len(node_netns) + 1:]
    return netns


def map_pods(netns: str | None, veths: Iterable[Link]) -> tuple[list[PodLink], list[str]]:
    """Each host veth's pod (namespace, eth0 name and ifindex, first IPv4 address), plus what could not be
    resolved, one line each (a namespace nobody names or holds, a peer without an address)."""
    veths = list(veths)
    problems: list[str] = []
    with netlink(netns) as ipr:
        names = resolve_nsids(ipr, {v.peer_netnsid for v in veths if v.peer_netnsid is not None})
    pods: list[PodLink] = []
    for v in veths:
        pod_ns = names.get(v.peer_netnsid) if v.peer_netnsid is not None else None
        if pod_ns is None:
            problems.append(f"{v.name}: peer namespace (nsid {v.peer_netnsid}) has no name and no process")
            continue
        with netlink(pod_ns) as ipr:
            peer = next((link for link in read_links(ipr) if link.index == v.peer_index), None)
        if peer is None or not peer.addresses:
            what = "no device" if peer is None else f"{peer.name} has no IPv4 address"
            problems.append(f"{v.name}: {what} at ifindex {v.peer_index} in {pod_ns}")
            continue
        pods.append(PodLink(v, pod_ns, pod_name(pod_ns, netns), peer.name, peer.index, peer.addresses[0]))
    return pods, problems


def map_macvlans(netns: str | None, parent: Link | None) -> list[PodLink]:
    """Pods whose interface is a macvlan on the node's `parent` device.

    A macvlan is invisible from its parent's namespace, so the search goes the other way: every /run/netns
    namespace the node has an id for (it got one when a device was moved there, so unrelated namespaces are
    never entered) is asked for macvlans whose lower device is `parent` in the node's namespace.
    """
    node_path = os.path.join(NETNS_DIR, netns) if netns else SELF_NETNS
    with netlink(netns) as ipr:
        related = [n for n in _named_namespaces() if n != netns and _nsid(ipr, os.path.join(NETNS_DIR, n)) is not None]
    pods = []
    for name in related:
        with netlink(name) as ipr:
            node_id = _nsid(ipr, node_path)
            links = read_links(ipr) if node_id is not None else []
        for link in links:
            if (link.kind == "macvlan" and link.peer_netnsid == node_id and link.addresses
                    and (parent is None or link.peer_index == parent.index)):
                pods.append(PodLink(None, name, pod_name(name, netns), link.name, link.index, link.addresses[0],
                                    role="macvlan"))
    return pods


def underlay(links: Iterable[Link], default_dev: int | None, pod_veths: Iterable[Link]) -> Link | None:
    """The node's uplink: the default route's device, else the device a VTEP sends through, else the only
    addressed device that is not lo, a bridge, a tunnel or a pod's veth."""
    links = list(links)
    by_index = {link.index: link for link in links}
    if default_dev in by_index:
        return by_index[default_dev]
    for link in links:
        if link.vxlan_link in by_index:
            return by_index[link.vxlan_link]
    skip = {v.index for v in pod_veths}
    cands = [link for link in links if link.ipv4 and link.name != "lo" and link.index not in skip
             and link.kind not in ("bridge", "vxlan", "ipip", "geneve")
             and not link.name.startswith("cilium_")]
    return cands[0] if len(cands) == 1 else None


def default_route_dev(netns: str | None) -> int | None:
    with netlink(netns) as ipr:
        for r in ipr.get_routes(family=socket.AF_INET, table=254):
            if r["dst_len"] == 0 and r.get_attr("RTA_OIF"):
                return int(r.get_attr("RTA_OIF"))
    return None


def node_name(netns: str | None) -> str:
    return netns if netns else socket.gethostname()


def topology(cni: str, mode: str, netns: str | None, roles: dict[str, str], links: list[Link],
             pods: list[PodLink], uplink: Link | None) -> Topology:
    """One node and its pods, as the planner wants them. `roles` maps device name -> role for the node's CNI
    devices (bridge, vxlan, tunnel); the uplink is the underlay and each pod's host veth a host_veth."""
    ns = netns or SELF_NETNS
    node = node_name(netns)
    devices = []
    if uplink is not None:
        devices.append(Device(uplink.name, "underlay", uplink.index, ns))
    devices += [Device(link.name, roles[link.name], link.index, ns) for link in links if link.name in roles]
    devices += [Device(p.host_veth.name, "host_veth", p.host_veth.index, ns) for p in pods if p.host_veth]
    topo_pods = tuple(Pod(p.name, node, p.netns, p.ip, p.host_veth.name if p.host_veth else "",
                          (Device(p.device, p.role, p.ifindex, p.netns),)) for p in pods)
    ips = {node: uplink.addresses[0]} if uplink is not None and uplink.addresses else {}
    return Topology(cni, mode, (Node(node, ns, tuple(devices)),), topo_pods, underlay_ips=ips, host_ips=dict(ips))
