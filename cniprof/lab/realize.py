# SPDX-License-Identifier: Apache-2.0
"""Build a CNI datapath inside network namespaces with pyroute2 (no `ip` shell-outs), returning its Topology.

Why namespaces: everything the lab creates (devices, addresses, routes, neighbours, fdb entries, sysctls)
lives in `cniprof-node*` namespaces, so deleting them undoes it all, and the root namespace's networking is
never changed.

Each (cni, mode) has a recipe in `_RECIPES`; only flannel/vxlan exists so far. A recipe creates its namespaces
through `_Namespaces`; `_rollback_on_failure` removes them if the build fails or is interrupted halfway.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns

from cniprof.errors import CniprofError, EnvironmentProblem, UsageError
from cniprof.lab import state
from cniprof.lab.cleanup import list_lab_namespaces, remove_namespaces
from cniprof.lab.topology import LAB_NETNS_PREFIX, Device, Node, Pod, Topology

log = logging.getLogger(__name__)

T = TypeVar("T")

NUD_PERMANENT = 0x80
NTF_SELF = 0x02
RTNH_F_ONLINK = 0x04
RTPROT_BOOT = 3  # what `ip route add` and the netlink library flannel uses leave when no proto is given


# ---------------------------------------------------------------- the flannel/vxlan layout (pure data)


@dataclass(frozen=True)
class PodSpec:
    name: str
    ip: str

    @property
    def host_veth(self) -> str:
        return f"veth-{self.name}"


@dataclass(frozen=True)
class NodeSpec:
    """One node of a flannel cluster: node N owns 10.244.N.0/24, its VTEP address is 10.244.N.0."""

    name: str
    index: int
    underlay_ip: str
    pods: tuple[PodSpec, ...]
    underlay_prefixlen: int = 24

    @property
    def netns(self) -> str:
        return f"{LAB_NETNS_PREFIX}{self.index}"

    @property
    def pod_cidr(self) -> str:
        return f"10.244.{self.index}.0/24"

    @property
    def gateway(self) -> str:
        return f"10.244.{self.index}.1"

    @property
    def vtep_ip(self) -> str:
        return f"10.244.{self.index}.0"

    def pod_netns(self, pod: PodSpec) -> str:
        return f"{self.netns}-{pod.name}"


FLANNEL_NODES = (
    NodeSpec("node1", 1, "192.168.77.1", (PodSpec("pod-a", "10.244.1.2"), PodSpec("pod-b", "10.244.1.3"))),
    NodeSpec("node2", 2, "192.168.77.2", (PodSpec("pod-c", "10.244.2.2"), PodSpec("pod-d", "10.244.2.3"))),
)
UNDERLAY_DEV = "eth0"
BRIDGE_DEV = "cni0"
VXLAN_DEV = "flannel.1"
VXLAN_VNI = 1
VXLAN_PORT = 8472
POD_MTU = 1450  # 1500 underlay - 50 bytes of VXLAN encapsulation, what flannel configures


# ---------------------------------------------------------------- namespace helpers


def run_in_netns(netns: str, fn: Callable[[], T]) -> T:
    """Run fn in a helper thread that entered `netns`.

    setns(CLONE_NEWNET) changes only the calling thread, and /proc/sys/net and new sockets follow the thread's
    namespace; the helper thread dies afterwards, so the main thread never leaves the root namespace.
    """
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            pr_netns.setns(netns, flags=0)  # flags=0: never create a namespace by accident
            result.append(fn())
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread below
            error.append(e)

    t = threading.Thread(target=target, name=f"netns:{netns}", daemon=True)
    t.start()
    t.join()
    if error:
        raise error[0]
    return result[0]


def _sysctl_path(key: str) -> str:
    return "/proc/sys/" + (key if "/" in key else key.replace(".", "/"))


def write_sysctl(netns: str, key: str, value: str) -> None:
    """Set a per-namespace sysctl (`net.ipv4.ip_forward` or `net/ipv4/conf/all/rp_filter`) in `netns`."""
    path = _sysctl_path(key)

    def write() -> None:
        with open(path, "w") as f:
            f.write(value)

    run_in_netns(netns, write)


def read_sysctl(netns: str, key: str) -> str:
    path = _sysctl_path(key)

    def read() -> str:
        with open(path) as f:
            return f.read().strip()

    return run_in_netns(netns, read)


def _ipr(netns: str) -> IPRoute:
    """An RTNL socket inside `netns`; flags=0 so a typo fails instead of creating a stray namespace."""
    return IPRoute(netns=netns, flags=0)


def _index(ipr: IPRoute, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise CniprofError(f"device {ifname} was not created")
    return int(found[0])


def _mac(ipr: IPRoute, index: int) -> str:
    (link,) = ipr.get_links(index)
    return str(link.get("IFLA_ADDRESS"))


class _Namespaces:
    """The lab namespaces created so far by one build (see `_rollback_on_failure`)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def create(self, name: str, forward: bool = False) -> None:
        if not name.startswith(LAB_NETNS_PREFIX):
            raise ValueError(f"lab namespaces must start with {LAB_NETNS_PREFIX!r}: {name}")
        self.names.append(name)  # before create(): an interrupt inside it may leave the mount behind
        pr_netns.create(name)
        _prepare_netns(name, forward)


@contextlib.contextmanager
def _rollback_on_failure() -> Iterator[_Namespaces]:
    """If the build fails (any exception, KeyboardInterrupt included), remove what it created; re-raise."""
    ns = _Namespaces()
    try:
        yield ns
    except BaseException:
        log.info("lab build failed; removing %s", ns.names)
        with _sigint_ignored():
            existing = set(list_lab_namespaces())
            remove_namespaces(n for n in ns.names if n in existing)
        raise


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Keep a second Ctrl-C from interrupting the rollback and leaving half a lab behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _prepare_netns(netns: str, forward: bool) -> None:
    """Quiet, usable namespace: IPv6 off (no router solicitations or MLD reports reach the tracer), lo up,
    and IPv4 forwarding on nodes (they route between pods and the VXLAN device)."""
    if os.path.exists("/proc/sys/net/ipv6"):
        # "default" first so that devices created later inherit it; "all" also covers lo, which exists already
        write_sysctl(netns, "net.ipv6.conf.default.disable_ipv6", "1")
        write_sysctl(netns, "net.ipv6.conf.all.disable_ipv6", "1")
    if forward:
        write_sysctl(netns, "net.ipv4.ip_forward", "1")
    with _ipr(netns) as ipr:
        ipr.link("set", index=_index(ipr, "lo"), state="up")


# ---------------------------------------------------------------- flannel / vxlan


def _flannel_vxlan(ns: _Namespaces) -> Topology:
    """Two nodes as flanneld (vxlan backend) and the CNI bridge plugin set them up."""
    nodes = FLANNEL_NODES
    for node in nodes:
        ns.create(node.netns, forward=True)
    for node in nodes:
        for pod in node.pods:
            ns.create(node.pod_netns(pod))

    _underlay(nodes)
    macs = {node.name: _node_devices(node) for node in nodes}
    for node in nodes:
        _flannel_peers(node, [(peer, macs[peer.name]) for peer in nodes if peer is not node])
        for pod in node.pods:
            _pod(node, pod)
    return _collect("flannel", "vxlan", nodes)


def _underlay(nodes: tuple[NodeSpec, ...]) -> None:
    """The "physical" network: one veth pair, eth0 on both ends, created straight into the node namespaces."""
    first, second = nodes
    with _ipr(first.netns) as ipr:
        ipr.link(
            "add", ifname=UNDERLAY_DEV, kind="veth", peer={"ifname": UNDERLAY_DEV, "net_ns_fd": second.netns}
        )
    for node in nodes:
        with _ipr(node.netns) as ipr:
            idx = _index(ipr, UNDERLAY_DEV)
            ipr.addr("add", index=idx, address=node.underlay_ip, prefixlen=node.underlay_prefixlen)
            ipr.link("set", index=idx, state="up")


def _node_devices(node: NodeSpec) -> str:
    """cni0 bridge and the flannel.1 VTEP of one node; returns the VTEP MAC the other nodes must learn."""
    with _ipr(node.netns) as ipr:
        eth0 = _index(ipr, UNDERLAY_DEV)
        ipr.link("add", ifname=BRIDGE_DEV, kind="bridge")
        br = _index(ipr, BRIDGE_DEV)
        ipr.addr("add", index=br, address=node.gateway, prefixlen=24)
        ipr.link("set", index=br, state="up")

        ipr.link(
            "add",
            ifname=VXLAN_DEV,
            kind="vxlan",
            vxlan_id=VXLAN_VNI,
            vxlan_local=node.underlay_ip,
            vxlan_link=eth0,
            vxlan_port=VXLAN_PORT,
            vxlan_learning=0,
            mtu=POD_MTU,
        )
        vx = _index(ipr, VXLAN_DEV)
        ipr.addr("add", index=vx, address=node.vtep_ip, prefixlen=32)
        ipr.link("set", index=vx, state="up")
        return _mac(ipr, vx)


def _flannel_peers(node: NodeSpec, peers: list[tuple[NodeSpec, str]]) -> None:
    """What flanneld programs per remote subnet lease: neighbour, fdb entry, onlink route (in that order)."""
    with _ipr(node.netns) as ipr:
        vx = _index(ipr, VXLAN_DEV)
        for peer, mac in peers:
            # ARP answer for the peer VTEP (so the kernel never ARPs over VXLAN)
            ipr.neigh("replace", dst=peer.vtep_ip, lladdr=mac, ifindex=vx, state=NUD_PERMANENT)
            # which underlay IP owns that VTEP MAC
            ipr.fdb(
                "replace", ifindex=vx, lladdr=mac, dst=peer.underlay_ip, state=NUD_PERMANENT, flags=NTF_SELF
            )
            # the peer's pod subnet, via its VTEP address, which is not on any local subnet: onlink
            ipr.route(
                "replace",
                dst=peer.pod_cidr,
                gateway=peer.vtep_ip,
                oif=vx,
                flags=RTNH_F_ONLINK,
                proto=RTPROT_BOOT,
            )


def _pod(node: NodeSpec, pod: PodSpec) -> None:
    """What the bridge CNI plugin does: veth pair, host end on cni0, pod end eth0 with address and route."""
    pod_ns = node.pod_netns(pod)
    with _ipr(node.netns) as ipr:
        ipr.link(
            "add",
            ifname=pod.host_veth,
            kind="veth",
            mtu=POD_MTU,
            peer={"ifname": "eth0", "net_ns_fd": pod_ns, "mtu": POD_MTU},
        )
        hv = _index(ipr, pod.host_veth)
        ipr.link("set", index=hv, master=_index(ipr, BRIDGE_DEV))
        ipr.link("set", index=hv, state="up")
    with _ipr(pod_ns) as ipr:
        eth0 = _index(ipr, "eth0")
        ipr.addr("add", index=eth0, address=pod.ip, prefixlen=24)
        ipr.link("set", index=eth0, state="up")
        ipr.route("add", dst="0.0.0.0/0", gateway=node.gateway, oif=eth0, proto=RTPROT_BOOT)


def _collect(cni: str, mode: str, nodes: tuple[NodeSpec, ...]) -> Topology:
    """Read back the ifindexes the kernel assigned and describe the result."""
    topo_nodes: list[Node] = []
    topo_pods: list[Pod] = []
    for node in nodes:
        with _ipr(node.netns) as ipr:
            named = [(UNDERLAY_DEV, "underlay"), (BRIDGE_DEV, "bridge"), (VXLAN_DEV, "vxlan")]
            named += [(p.host_veth, "host_veth") for p in node.pods]
            devices = tuple(Device(n, role, _index(ipr, n), node.netns) for n, role in named)
        topo_nodes.append(Node(node.name, node.netns, devices))
        for pod in node.pods:
            pod_ns = node.pod_netns(pod)
            with _ipr(pod_ns) as ipr:
                eth0 = Device("eth0", "pod_veth", _index(ipr, "eth0"), pod_ns)
            topo_pods.append(Pod(pod.name, node.name, pod_ns, pod.ip, pod.host_veth, (eth0,)))
    return Topology(
        cni=cni,
        mode=mode,
        nodes=tuple(topo_nodes),
        pods=tuple(topo_pods),
        underlay_ips={n.name: n.underlay_ip for n in nodes},
    )


# ---------------------------------------------------------------- dispatch

_RECIPES: dict[tuple[str, str], Callable[[_Namespaces], Topology]] = {
    ("flannel", "vxlan"): _flannel_vxlan,
}
DEFAULT_MODES = {"flannel": "vxlan"}


def supported() -> list[str]:
    """Every lab that can be built, as `cni:mode`."""
    return [f"{c}:{m}" for c, m in _RECIPES]


def parse_cni(cni: str, mode: str | None = None) -> tuple[str, str]:
    """`flannel`, `flannel:vxlan` or (`flannel`, mode) -> ("flannel", "vxlan"); UsageError if unsupported."""
    name, _, spec_mode = cni.strip().lower().partition(":")
    if spec_mode and mode and spec_mode != mode.lower():
        raise UsageError(f"conflicting modes {spec_mode!r} and {mode!r} for --cni {cni}")
    chosen = (spec_mode or (mode or "").lower() or DEFAULT_MODES.get(name, "")).strip()
    if (name, chosen) not in _RECIPES:
        asked = f"{name}:{chosen}" if chosen else name
        raise UsageError(f"unsupported CNI {asked!r}; supported: {', '.join(supported())}")
    return name, chosen


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise EnvironmentProblem(f"{what} needs network namespaces: run as root")


def realize(cni: str, mode: str) -> Topology:
    """Build the lab for (cni, mode) and return its topology; on any failure nothing is left behind.

    Refuses to start while any `cniprof-node*` namespace exists: the names are fixed, and a lab left by a
    crash must be removed (`cniprof lab down`) rather than half reused.
    """
    require_root("building the lab")
    cni, mode = parse_cni(cni, mode)
    leftovers = list_lab_namespaces()
    if leftovers:
        raise CniprofError(
            f"lab namespaces already exist ({', '.join(leftovers)}); run `cniprof lab down` first"
        )
    log.info("building %s/%s lab", cni, mode)
    with _rollback_on_failure() as ns:
        return _RECIPES[(cni, mode)](ns)


def up(cni: str, mode: str | None = None) -> tuple[Topology, bool]:
    """Bring the lab up unless the same one is already up; returns (topology, created).

    A different lab being up, or leftovers without a state file, is an error: say what to run instead of
    silently replacing someone's lab.
    """
    require_root("building the lab")
    cni, mode = parse_cni(cni, mode)
    with state.locked():
        current = state.load()
        existing = set(list_lab_namespaces())
        if current is not None and not existing:
            # stale record (its namespaces were deleted behind our back): nothing to protect, forget it
            log.info("forgetting the stale record of a %s/%s lab", current.cni, current.mode)
            state.clear()
            current = None
        if current is not None:
            missing = [n for n in current.namespaces() if n not in existing]
            if missing:
                raise CniprofError(
                    f"the recorded {current.cni}/{current.mode} lab is broken "
                    f"(missing {', '.join(missing)}); "
                    "run `cniprof lab down` first"
                )
            if (current.cni, current.mode) == (cni, mode):
                return current, False
            raise CniprofError(
                f"a {current.cni}/{current.mode} lab is already up; "
                f"run `cniprof lab down` before building {cni}/{mode}"
            )
        topology = realize(cni, mode)
        try:
            state.save(topology)
        except BaseException:
            with _sigint_ignored():
                remove_namespaces(topology.namespaces())
            raise
        return topology, True
