# SPDX-License-Identifier: Apache-2.0
"""Tunings of a scenario variant, applied to the lab's devices for one run and reverted right after it.

Why inside the lab's namespaces: they change nothing outside the lab (the machine is shared), and every one can
be read back first and restored exactly. What is machine-wide (net.core.* sysctls, RFS's global flow table) is
applied only when the scenario says `host_changes: true`, once per variant, by the runner through
cniprof.lab.host_sysctl (state file, restored after a crash); what is costly to install (kube-proxy's services)
is installed once per variant by the runner too (runner.variant_setup). Both are skipped by plan() here.

Implemented:
  mtu: N            underlay devices get N; overlay devices and the pods' devices get N minus the model's
                    encapsulation overhead (VXLAN 50, IPIP 20), like a CNI derives its MTU from the node's.
  offloads: {gro, gso, tso, tx-checksum, rx-checksum: on|off, devices: [role, ...]}   (ethtool -K)
                    roles: veth (host and pod ends), vxlan, tunnel, underlay, bridge, macvlan; default veth, vxlan
  txqueuelen: N     on every lab device
  rps / xps: all | none | CPU list like "0,1"   RPS (rx queues) / XPS (tx queues) of the veth and underlay devices
  rfs: N            rps_flow_cnt=N on every rx queue of the veth and underlay devices (here), and the machine-wide
                    net.core.rps_sock_flow_entries=N (runner, needs host_changes: true); RFS needs RPS on too
  qdisc: KIND       root qdisc of every lab device (`tc qdisc replace`; reverted with `tc qdisc del`, which gives
                    the device its default back). This kernel has pfifo_fast, pfifo, bfifo (no fq, fq_codel).
  sysctl: {key: value}   per-namespace sysctls (net.ipv4.tcp_*, net.ipv4.udp_*, net.ipv4.ip_local_port_range,
                    net.core.somaxconn) in every lab namespace (here), each read back first and written back
                    after the run; the machine-wide net.core.netdev_max_backlog, busy_poll, busy_read and
                    rps_sock_flow_entries only with `host_changes: true` (runner, cniprof.lab.host_sysctl: set
                    once for the variant's runs, restored after them, after Ctrl-C, and by `lab down` after a
                    crash); any other key is refused by the validator
  notrack: true     a raw-priority nft table (cniprof-notrack) in every node namespace: pod-to-pod packets (and
                    their VXLAN encapsulation) skip conntrack; deleted after the run. Not with the pod-to-service
                    path (the validator says why: NAT needs conntrack)
  services: N | {count: N, mode: iptables|nftables}   kube-proxy rules with N dummy services on every node
                    (runner.variant_setup; cniprof.lab.kubeproxy / kubeproxy_nft), the real service in front of
                    the run's destination pod
  cpu_pinning: CPU list like "0"   every generator process (client and server) runs on these CPUs: the runner
                    sets its own affinity while it starts the generator, which the processes inherit (through
                    ip netns exec), and restores it right after, so the tracer itself is not pinned
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from cniprof.cni.topology import Topology
from cniprof.errors import CniprofError
from cniprof.lab import kubeproxy_nft, kubeproxy_switch
from cniprof.lab.kubeproxy import cluster_cidr_of
from cniprof.netns_exec import run_in
from cniprof.sysinfo import parse_cpu_list

IMPLEMENTED = ("mtu", "offloads", "txqueuelen", "rps", "xps", "cpu_pinning", "qdisc", "sysctl", "services",
               "notrack", "rfs")
# machine-wide sysctls a scenario may change with `host_changes: true` (cniprof.lab.host_sysctl restores them)
HOST_SYSCTLS = ("net.core.netdev_max_backlog", "net.core.busy_poll", "net.core.busy_read",
                "net.core.rps_sock_flow_entries")
MAX_RFS = 1 << 20
VARIANT_TUNINGS = ("services",)  # installed by the runner once for a variant's consecutive runs
NOTRACK_TABLE = "cniprof-notrack"
VXLAN_PORTS = "{ 4789, 8472 }"  # the encapsulation of pod-to-pod traffic (IANA and Linux/flannel defaults)
# sysctls that each network namespace has its own copy of (so changing them in the lab touches nothing else)
NETNS_SYSCTL_PREFIXES = ("net.ipv4.tcp_", "net.ipv4.udp_", "net.ipv4.ip_local_port_range", "net.core.somaxconn")
DEFAULT_QDISCS = ("noqueue", "pfifo_fast", "fq_codel", "mq", "noop")
PROCESS_TUNINGS = ("cpu_pinning",)  # not device settings: applied by `pinned` around the generator's start
SKIPPED_BY_PLAN = (*PROCESS_TUNINGS, *VARIANT_TUNINGS)
FEATURES = {"gro": "generic-receive-offload", "gso": "generic-segmentation-offload",
            "tso": "tcp-segmentation-offload", "tx-checksum": "tx-checksumming", "rx-checksum": "rx-checksumming"}
ETHTOOL_NAMES = {"gro": "gro", "gso": "gso", "tso": "tso", "tx-checksum": "tx", "rx-checksum": "rx"}
ROLE_GROUPS = {"veth": ("host_veth", "pod_veth"), "vxlan": ("vxlan",), "tunnel": ("tunnel",),
               "underlay": ("underlay",), "bridge": ("bridge",), "macvlan": ("macvlan",)}
DEFAULT_OFFLOAD_ROLES = ("veth", "vxlan")
OVERHEAD = {"vxlan": 50, "tunnel": 20}
# inner devices after outer ones when the MTU grows (a device may not exceed its lower device), reversed otherwise
MTU_ORDER = ("underlay", "vxlan", "tunnel", "bridge", "host_veth", "pod_veth", "macvlan")


class RevertFailed(CniprofError):
    """A tuning could not be undone: the lab is no longer in its untuned state, so a study must stop."""


@dataclass(frozen=True)
class Dev:
    netns: str
    name: str
    role: str


@dataclass(frozen=True)
class Change:
    """One setting of one device: how to set it and how to put the old value back."""

    dev: Dev
    what: str
    apply: tuple[str, ...]
    revert: tuple[str, ...]


def devices(topo: Topology) -> list[Dev]:
    """Every device of the lab, node and pod ends, once each."""
    seen: dict[tuple[str, str], Dev] = {}
    for holder in (*topo.nodes, *topo.pods):
        for d in holder.devices:
            seen.setdefault((d.netns, d.name), Dev(d.netns, d.name, d.role))
    return list(seen.values())


def link_info(dev: Dev) -> dict[str, Any]:
    return json.loads(run_in(dev.netns, ["ip", "-j", "link", "show", "dev", dev.name]))[0]


def parse_features(text: str) -> dict[str, tuple[bool, bool]]:
    """`ethtool -k` output -> {feature: (on, fixed)}."""
    out = {}
    for line in text.splitlines():
        name, sep, rest = line.partition(":")
        if sep and rest.strip():
            words = rest.split()
            out[name.strip()] = (words[0] == "on", "[fixed]" in rest)
    return out


def cpu_list(value: str | int) -> set[int]:
    """all -> every CPU this process may use, none -> empty, a cpulist ("0,2", "0-3") -> those CPUs."""
    if value == "all":
        return set(os.sched_getaffinity(0))
    if value == "none":
        return set()
    return set(parse_cpu_list(str(value)))


@contextmanager
def pinned(cpus: str | int | None) -> Iterator[None]:
    """This process on cpus for the block (children started inside inherit it); the old affinity afterwards."""
    if cpus is None:
        yield
        return
    wanted = cpu_list(cpus)
    old = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, wanted)
    except (OSError, ValueError) as e:
        raise CniprofError(f"cpu_pinning {cpus}: cannot run on CPUs {sorted(wanted)}: {e}") from None
    try:
        yield
    finally:
        os.sched_setaffinity(0, old)


def cpu_mask(value: str | int) -> str:
    """all -> every online CPU, none -> 0, "0,2" -> bitmask, as the hex string sysfs takes."""
    cpus = sorted(os.sched_getaffinity(0))
    if value == "all":
        chosen = cpus
    elif value == "none":
        chosen = []
    else:
        chosen = [int(x) for x in str(value).split(",") if x.strip()]
    return format(sum(1 << c for c in chosen), "x")


def _overhead(devs: list[Dev]) -> int:
    return max((OVERHEAD.get(d.role, 0) for d in devs), default=0)


def _mtu_revert(dev: Dev, old: int, devs: list[Dev], infos: dict[Dev, dict[str, Any]]) -> tuple[str, ...]:
    """How to give dev its old MTU back.

    A tunnel's MTU may not be set above its underlay's minus the encapsulation overhead, but a lab whose underlay
    was lowered under a running tunnel (the mtu-mismatch injection) has one there, which `ip link set` cannot
    restore directly: the underlay is lifted for the moment of the change, then given back the MTU it has then."""
    plain = ("ip", "link", "set", "dev", dev.name, "mtu", str(old))
    lower = next((d for d in devs if d.role == "underlay" and d.netns == dev.netns), None)
    if dev.role not in OVERHEAD or lower is None or old + OVERHEAD[dev.role] <= int(infos[lower]["mtu"]):
        return plain
    now = f"/sys/class/net/{lower.name}/mtu"
    script = (f"u=$(cat {now}); ip link set dev {lower.name} mtu {old + OVERHEAD[dev.role]} && "
              f"{' '.join(plain)}; r=$?; ip link set dev {lower.name} mtu $u && exit $r")
    return ("sh", "-c", script)


def plan_mtu(devs: list[Dev], infos: dict[Dev, dict[str, Any]], mtu: int) -> list[Change]:
    inner = mtu - _overhead(devs)
    changes = []
    for dev in devs:
        target = mtu if dev.role == "underlay" else (mtu - OVERHEAD[dev.role] if dev.role in OVERHEAD else inner)
        old = int(infos[dev]["mtu"])
        if old != target:
            changes.append(Change(dev, f"mtu {old}->{target}", ("ip", "link", "set", "dev", dev.name, "mtu",
                                                                 str(target)),
                                  _mtu_revert(dev, old, devs, infos)))
    grows = any(int(infos[c.dev]["mtu"]) < int(c.apply[-1]) for c in changes)
    rank = {r: i for i, r in enumerate(MTU_ORDER)}
    changes.sort(key=lambda c: rank.get(c.dev.role, len(rank)), reverse=not grows)
    return changes


def plan_offloads(devs: list[Dev], features: dict[Dev, dict[str, tuple[bool, bool]]],
                  spec: dict[str, Any]) -> list[Change]:
    roles = {r for group in spec.get("devices", DEFAULT_OFFLOAD_ROLES) for r in ROLE_GROUPS[group]}
    changes = []
    for dev in devs:
        if dev.role not in roles:
            continue
        for key, value in spec.items():
            if key == "devices":
                continue
            on, fixed = features[dev].get(FEATURES[key], (False, True))
            want = value in (True, "on")
            if fixed or on == want:
                continue  # a fixed feature cannot change; recorded as skipped by not being listed
            name = ETHTOOL_NAMES[key]
            changes.append(Change(dev, f"{key} {'on' if want else 'off'}",
                                  ("ethtool", "-K", dev.name, name, "on" if want else "off"),
                                  ("ethtool", "-K", dev.name, name, "on" if on else "off")))
    return changes


def plan_txqueuelen(devs: list[Dev], infos: dict[Dev, dict[str, Any]], qlen: int) -> list[Change]:
    return [Change(d, f"txqueuelen {infos[d].get('txqlen')}->{qlen}",
                   ("ip", "link", "set", "dev", d.name, "txqueuelen", str(qlen)),
                   ("ip", "link", "set", "dev", d.name, "txqueuelen", str(infos[d].get("txqlen", 1000))))
            for d in devs if int(infos[d].get("txqlen", -1)) != qlen]


def _steering(devs: list[Dev], kind: str, value: Any) -> list[Change]:
    """RPS (rx-*/rps_cpus) or XPS (tx-*/xps_cpus) on veth and underlay devices, read back through sysfs."""
    queue, file = ("rx", "rps_cpus") if kind == "rps" else ("tx", "xps_cpus")
    mask = cpu_mask(value)
    return [Change(dev, f"{kind} {old}->{mask}", ("sh", "-c", f"echo {mask} > {target}"),
                   ("sh", "-c", f"echo {old} > {target}"))
            for dev, target, old in _queue_files(devs, queue, file)
            if int(old.replace(",", ""), 16) != int(mask, 16)]  # already the wanted mask: nothing to change


def _queue_files(devs: list[Dev], queue: str, file: str) -> list[tuple[Dev, str, str]]:
    """(device, path, current value) of `file` in every rx/tx queue of the veth and underlay devices (sysfs)."""
    out = []
    for dev in devs:
        if dev.role not in ("host_veth", "pod_veth", "underlay"):
            continue
        base = f"/sys/class/net/{dev.name}/queues"
        listing = run_in(dev.netns, ["sh", "-c", f"for q in {base}/{queue}-*; do echo $q $(cat $q/{file}); done"])
        for line in listing.splitlines():
            path, _, old = line.partition(" ")
            if old.strip():  # no queue file: nothing to change or revert
                out.append((dev, f"{path}/{file}", old.strip()))
    return out


def plan_qdisc(devs: list[Dev], kind: str) -> list[Change]:
    changes = []
    for dev in devs:
        roots = [q for q in json.loads(run_in(dev.netns, ["tc", "-j", "qdisc", "show", "dev", dev.name]) or "[]")
                 if q.get("root")]
        old = roots[0]["kind"] if roots else "noqueue"
        if old not in DEFAULT_QDISCS:
            raise CniprofError(f"tuning qdisc: {dev.netns}/{dev.name} already has a {old} qdisc; not replacing it")
        changes.append(Change(dev, f"qdisc {old}->{kind}", ("tc", "qdisc", "replace", "dev", dev.name, "root", kind),
                              ("tc", "qdisc", "del", "dev", dev.name, "root")))
    return changes


def plan_rfs(devs: list[Dev], flows: int) -> list[Change]:
    """RFS per device: rps_flow_cnt of every rx queue of the veth and underlay devices (the machine-wide flow
    table, net.core.rps_sock_flow_entries, is a host change: cniprof.lab.host_sysctl)."""
    return [Change(dev, f"rps_flow_cnt {old}->{flows}", ("sh", "-c", f"echo {flows} > {target}"),
                   ("sh", "-c", f"echo {old} > {target}"))
            for dev, target, old in _queue_files(devs, "rx", "rps_flow_cnt") if old != str(flows)]


def notrack_rules(cluster_cidr: str) -> str:
    """nft commands (one argv word: nft joins its arguments) for a raw-priority table that exempts pod-to-pod
    traffic and its VXLAN encapsulation from conntrack, before conntrack (priority -200) sees it."""
    rule = f"ip saddr {cluster_cidr} ip daddr {cluster_cidr} notrack"
    return "; ".join([
        f"add table ip {NOTRACK_TABLE}",
        f"add chain ip {NOTRACK_TABLE} prerouting {{ type filter hook prerouting priority raw; policy accept; }}",
        f"add chain ip {NOTRACK_TABLE} output {{ type filter hook output priority raw; policy accept; }}",
        *(f"add rule ip {NOTRACK_TABLE} {chain} {r}" for chain in ("prerouting", "output")
          for r in (rule, f"udp dport {VXLAN_PORTS} notrack")),
    ])


def plan_host_gw(topo: Topology) -> list[Change]:
    """flannel's host-gw backend in place of VXLAN: every route to another node's pod subnet through the tunnel
    device is replaced by one via that node's underlay address (what flanneld installs when the backend is
    switched); the revert puts the tunnel route back. Tune only: the hop model of a traced run would not match."""
    import ipaddress

    changes = []
    for node in topo.nodes:
        tunnels, underlay = node.by_role("vxlan"), node.by_role("underlay")
        if not tunnels or not underlay:
            continue
        for route in json.loads(run_in(node.netns, ["ip", "-j", "route", "show", "dev", tunnels[0].name]) or "[]"):
            if "/" not in route.get("dst", "") or "gateway" not in route:
                continue
            net = ipaddress.ip_network(route["dst"])
            owner = next((p.node for p in topo.pods if ipaddress.ip_address(p.ip) in net), None)
            via = topo.underlay_ips.get(owner or "")
            if via is None:
                continue
            onlink = ("onlink",) if "onlink" in route.get("flags", []) else ()
            changes.append(Change(Dev(node.netns, tunnels[0].name, "vxlan"), f"route {net} via {via} (host-gw)",
                                  ("ip", "route", "replace", str(net), "via", via, "dev", underlay[0].name),
                                  ("ip", "route", "replace", str(net), "via", route["gateway"], "dev",
                                   tunnels[0].name, *onlink)))
    if not changes:
        raise CniprofError(f"host-gw: the {topo.cni}/{topo.mode} lab has no pod routes through a VXLAN device")
    return changes


def plan_notrack(topo: Topology) -> list[Change]:
    """NOTRACK for pod-to-pod traffic in every node namespace; refused where the table is already there."""

    script = notrack_rules(str(cluster_cidr_of(topo)))
    changes = []
    for node in topo.nodes:
        tables = run_in(node.netns, ["nft", "list", "tables"])
        if f"table ip {NOTRACK_TABLE}" in tables:
            raise CniprofError(f"tuning notrack: {node.netns} already has table ip {NOTRACK_TABLE}; not touching it")
        changes.append(Change(Dev(node.netns, "-", "netns"), "notrack pod-to-pod", ("nft", script),
                              ("nft", "delete", "table", "ip", NOTRACK_TABLE)))
    return changes


def netns_sysctl(key: str) -> bool:
    return key.startswith(NETNS_SYSCTL_PREFIXES)


def plan_sysctl(topo: Topology, values: dict[str, Any]) -> list[Change]:
    namespaces = list(dict.fromkeys([*(n.netns for n in topo.nodes), *(p.netns for p in topo.pods)]))
    changes = []
    for netns in namespaces:
        for key, value in values.items():
            if key in HOST_SYSCTLS:
                continue  # machine-wide: cniprof.lab.host_sysctl sets it once for the variant
            if not netns_sysctl(key):
                raise CniprofError(f"tuning sysctl {key} is machine-wide, not per namespace; not applied")
            old = " ".join(run_in(netns, ["sysctl", "-n", key]).split())
            new = " ".join(str(value).split())
            if old != new:
                changes.append(Change(Dev(netns, "-", "netns"), f"{key} {old}->{new}",
                                      ("sysctl", "-q", "-w", f"{key}={new}"), ("sysctl", "-q", "-w", f"{key}={old}")))
    return changes


def plan_kube_proxy_nftables(topo: Topology) -> list[Change]:
    """The switch to nftables mode on every node (with its exact revert): iptables' two entry jumps into
    KUBE-SERVICES out, nftables' two `jump services` in (the table is staged by cniprof.lab.kubeproxy_switch)."""
    out: list[Change] = []
    for node in topo.nodes:
        dev = Dev(node.netns, "kube-proxy", "node")
        for ipt_chain, nft_chain in kubeproxy_switch.ENTRY_CHAINS.items():
            out.append(Change(dev, f"iptables {ipt_chain} -> KUBE-SERVICES removed",
                              ("iptables", "-t", "nat", "-D", ipt_chain, *kubeproxy_switch.PORTALS),
                              ("iptables", "-t", "nat", "-A", ipt_chain, *kubeproxy_switch.PORTALS)))
            out.append(Change(dev, f"nftables {nft_chain} -> services added",
                              ("nft", "add", "rule", "ip", kubeproxy_nft.TABLE, nft_chain, "jump", "services"),
                              ("nft", "flush", "chain", "ip", kubeproxy_nft.TABLE, nft_chain)))
    return out


def plan(topo: Topology, tunings: dict[str, Any]) -> list[Change]:
    """The changes a variant's tunings make to this lab (reads the current values)."""
    if not set(tunings) - set(SKIPPED_BY_PLAN):
        return []
    devs = devices(topo)
    infos = {d: link_info(d) for d in devs} if {"mtu", "txqueuelen"} & set(tunings) else {}
    changes: list[Change] = []
    for key, value in tunings.items():
        if key == "mtu":
            changes += plan_mtu(devs, infos, int(value))
        elif key == "offloads":
            feats = {d: parse_features(run_in(d.netns, ["ethtool", "-k", d.name])) for d in devs}
            changes += plan_offloads(devs, feats, value)
        elif key == "txqueuelen":
            changes += plan_txqueuelen(devs, infos, int(value))
        elif key in ("rps", "xps"):
            changes += _steering(devs, key, value)
        elif key == "qdisc":
            changes += plan_qdisc(devs, str(value))
        elif key == "sysctl":
            changes += plan_sysctl(topo, value)
        elif key == "notrack":
            changes += plan_notrack(topo) if value else []
        elif key == "rfs":
            changes += plan_rfs(devs, int(value))
        elif key == "routing":  # tune only: host-gw in place of the VXLAN routes
            changes += plan_host_gw(topo) if value == "host-gw" else []
        elif key == "kube_proxy_mode":  # tune only (staged by cniprof.tune.tunes); not a scenario tuning
            changes += plan_kube_proxy_nftables(topo) if value == "nftables" else []
        elif key in SKIPPED_BY_PLAN:
            continue
        else:
            raise CniprofError(f"tuning {key} is not implemented yet")
    return changes


def run_change(change: Change) -> None:
    """Make one change (its revert is the caller's business)."""
    run_in(change.dev.netns, list(change.apply))


@contextmanager
def applied(topo: Topology, tunings: dict[str, Any]) -> Iterator[list[Change]]:
    """Apply the tunings for the block; every change made is reverted (in reverse order) whatever happens."""
    done: list[Change] = []
    try:
        for change in plan(topo, tunings) if tunings else []:
            run_change(change)
            done.append(change)
        yield done
    finally:
        errors = []
        for change in reversed(done):
            try:
                run_in(change.dev.netns, list(change.revert))
            except CniprofError as e:
                errors.append(str(e))
        if errors:
            raise RevertFailed(f"could not revert {len(errors)} tuning changes (run `cniprof lab down`); "
                               f"first: {errors[0]}")
