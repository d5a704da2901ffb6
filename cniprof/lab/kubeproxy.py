# SPDX-License-Identifier: Apache-2.0
"""kube-proxy in the lab: ClusterIP services in front of a pod, with iptables rules shaped like kube-proxy's.

Why: on a real node, pod-to-service traffic pays for kube-proxy's iptables mode: a linear KUBE-SERVICES chain
with one rule per service port, a KUBE-SVC-<hash> chain per service that picks an endpoint with
`-m statistic --mode random --probability 1/n, 1/(n-1), ...`, and a KUBE-SEP-<hash> chain per endpoint that
DNATs. The cost of the first packet of every connection grows with the number of services; `services=N` adds N
dummy services (each with its own KUBE-SVC/KUBE-SEP chains towards pod IPs that do not exist) so that growth
can be measured with cniprof's netfilter probe.

Layout (as kube-proxy v1.2x writes it with iptables-restore, comments included; chain names are kube-proxy's:
"KUBE-SVC-" / "KUBE-SEP-" + the first 16 base32 characters of sha256(service port name + protocol [+ endpoint])):
    nat:    PREROUTING, OUTPUT -> KUBE-SERVICES -> KUBE-SVC-* -> KUBE-SEP-* (DNAT; KUBE-MARK-MASQ for hairpin)
            KUBE-SVC-*: traffic from outside the cluster CIDR -> KUBE-MARK-MASQ
            POSTROUTING -> KUBE-POSTROUTING (MASQUERADE what KUBE-MARK-MASQ marked with 0x4000)
            the last KUBE-SERVICES rule: local destinations -> KUBE-NODEPORTS (empty here)
    filter: FORWARD -> KUBE-FORWARD (drop INVALID, accept marked and established traffic)
The real services come after the dummy ones in KUBE-SERVICES, so their packets walk every dummy rule (kube-proxy
orders services by Go map iteration, i.e. randomly: a real node walks half of them on average).

Everything is applied with one `iptables-restore --noflush` per node namespace (tens of thousands of rules in
about a second, instead of one iptables process per rule), and removed the same way: remove() deletes the jumps
from the built-in chains and every KUBE-* chain it finds, then the nftables tables the removal left empty (an
iptables-nft table with only its built-in chains still registers its hooks, so conntrack and NAT would keep
costing every packet). The lab's namespaces vanish at `lab down` anyway; removal works on a live lab too.

Rule generation (`ruleset`, `removal`) is pure and unit-tested; apply()/remove() only run the tools.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import logging
import re
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cniprof.cni.topology import Pod, Topology
from cniprof.errors import CniprofError, EnvironmentProblem, UsageError
from cniprof.netns_exec import run_in

log = logging.getLogger(__name__)
T = TypeVar("T")

SERVICE_CIDR = ipaddress.IPv4Network("10.96.0.0/16")  # kube-proxy's / kubeadm's default service CIDR
REAL_OFFSET = 100      # real services get 10.96.0.100, .101, ...
DUMMY_OFFSET = 1000    # dummy services get 10.96.3.232 and up
MAX_DUMMIES = SERVICE_CIDR.num_addresses - DUMMY_OFFSET - 2
MASQ_MARK = "0x4000/0x4000"
DUMMY_PORT = 80
DUMMY_TARGET_PORT = 8080
RESTORE_TIMEOUT_S = 300
BUILTIN = {"nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"), "filter": ("INPUT", "FORWARD", "OUTPUT")}
PROTOCOLS = ("tcp", "udp", "sctp")


@dataclass(frozen=True)
class Service:
    """One service port: `namespace/name:port_name` at cluster_ip:port, load-balanced over endpoints ("ip:port")."""

    namespace: str
    name: str
    port_name: str
    cluster_ip: str
    port: int
    protocol: str
    endpoints: tuple[str, ...]

    @property
    def port_name_string(self) -> str:
        """kube-proxy's ServicePortName.String(): what its chain hashes and comments use."""
        return f"{self.namespace}/{self.name}:{self.port_name}"


def _hash16(text: str) -> str:
    """kube-proxy's chain-name hash: base32(sha256(text)), first 16 characters."""
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def svc_chain(svc: Service) -> str:
    return "KUBE-SVC-" + _hash16(svc.port_name_string + svc.protocol)


def sep_chain(svc: Service, endpoint: str) -> str:
    return "KUBE-SEP-" + _hash16(svc.port_name_string + svc.protocol + endpoint)


def probabilities(n: int) -> list[float | None]:
    """Per endpoint: the probability its statistic rule matches (1/n, 1/(n-1), ..., 1/2), None for the last one.

    Each rule only sees the packets the rules before it let through, so every endpoint gets 1/n of the traffic.
    """
    if n < 1:
        raise ValueError("a service needs at least one endpoint")
    return [1.0 / (n - i) for i in range(n - 1)] + [None]


def format_probability(p: float) -> str:
    """As kube-proxy writes it (fmt.Sprintf("%0.10f", p))."""
    return f"{p:0.10f}"


@dataclass(frozen=True)
class Ruleset:
    """An iptables-restore input and what it adds (per table: user chains; and the rule count)."""

    text: str
    chains: dict[str, tuple[str, ...]]
    rules: int


def _rule(chain: str, *parts: str) -> str:
    return " ".join(("-A", chain, *parts))


def _comment(text: str) -> str:
    return f'-m comment --comment "{text}"'


def ruleset(services: Sequence[Service], cluster_cidr: str) -> Ruleset:
    """kube-proxy's iptables-mode rules for `services` (pure). Services are written in the order given."""
    for s in services:
        if s.protocol not in PROTOCOLS:
            raise UsageError(f"service {s.port_name_string}: unknown protocol {s.protocol!r}")
        if not s.endpoints:
            raise UsageError(f"service {s.port_name_string} has no endpoint")
    nat_chains = ["KUBE-SERVICES", "KUBE-POSTROUTING", "KUBE-MARK-MASQ", "KUBE-NODEPORTS"]
    nat = [
        _rule("PREROUTING", _comment("kubernetes service portals"), "-j KUBE-SERVICES"),
        _rule("OUTPUT", _comment("kubernetes service portals"), "-j KUBE-SERVICES"),
        _rule("POSTROUTING", _comment("kubernetes postrouting rules"), "-j KUBE-POSTROUTING"),
        _rule("KUBE-MARK-MASQ", f"-j MARK --set-xmark {MASQ_MARK}"),
        _rule("KUBE-POSTROUTING", f"-m mark ! --mark {MASQ_MARK}", "-j RETURN"),
        _rule("KUBE-POSTROUTING", "-j MARK --set-xmark 0x4000/0x0"),
        _rule("KUBE-POSTROUTING", _comment("kubernetes service traffic requiring SNAT"),
              "-j MASQUERADE --random-fully"),
    ]
    svc_rules: list[str] = []
    for s in services:
        name = s.port_name_string
        chain = svc_chain(s)
        nat_chains.append(chain)
        match = f"-d {s.cluster_ip}/32 -p {s.protocol} {_comment(f'{name} cluster IP')} -m {s.protocol} --dport {s.port}"
        nat.append(_rule("KUBE-SERVICES", match, f"-j {chain}"))
        svc_rules.append(_rule(chain, f"! -s {cluster_cidr}", match, "-j KUBE-MARK-MASQ"))
        for ep, p in zip(s.endpoints, probabilities(len(s.endpoints))):
            sep = sep_chain(s, ep)
            nat_chains.append(sep)
            stat = f"-m statistic --mode random --probability {format_probability(p)} " if p is not None else ""
            svc_rules.append(_rule(chain, _comment(f"{name} -> {ep}"), f"{stat}-j {sep}"))
            ip = ep.rsplit(":", 1)[0]
            svc_rules.append(_rule(sep, f"-s {ip}/32", _comment(name), "-j KUBE-MARK-MASQ"))
            svc_rules.append(_rule(sep, f"-p {s.protocol}", _comment(name), f"-m {s.protocol}",
                                   f"-j DNAT --to-destination {ep}"))
    nat.append(_rule("KUBE-SERVICES",
                     _comment("kubernetes service nodeports; NOTE: this must be the last rule in this chain"),
                     "-m addrtype --dst-type LOCAL", "-j KUBE-NODEPORTS"))
    nat += svc_rules
    filter_chains = ["KUBE-FORWARD"]
    filt = [
        _rule("FORWARD", _comment("kubernetes forwarding rules"), "-j KUBE-FORWARD"),
        _rule("KUBE-FORWARD", "-m conntrack --ctstate INVALID", "-j DROP"),
        _rule("KUBE-FORWARD", _comment("kubernetes forwarding rules"), f"-m mark --mark {MASQ_MARK}", "-j ACCEPT"),
        _rule("KUBE-FORWARD", _comment("kubernetes forwarding conntrack rule"),
              "-m conntrack --ctstate RELATED,ESTABLISHED", "-j ACCEPT"),
    ]
    lines = ["*nat", *(f":{c} - [0:0]" for c in nat_chains), *nat, "COMMIT",
             "*filter", *(f":{c} - [0:0]" for c in filter_chains), *filt, "COMMIT"]
    return Ruleset("\n".join(lines) + "\n", {"nat": tuple(nat_chains), "filter": tuple(filter_chains)},
                   len(nat) + len(filt))


_TABLE = re.compile(r"^\*(\w+)$")
_CHAIN = re.compile(r"^:(\S+) ")
_JUMP = re.compile(r"^-A (\S+) (.*-[jg] (KUBE-\S+).*)$")


def removal(saved: str) -> str:
    """The iptables-restore --noflush input that undoes ruleset() given `iptables-save` output (pure).

    Deletes every rule of a built-in chain that jumps to a KUBE-* chain, then flushes (by redeclaring) and deletes
    every KUBE-* chain. Returns "" when there is nothing to remove.
    """
    out: list[str] = []
    table: str | None = None
    chains: list[str] = []
    jumps: list[str] = []

    def close() -> None:
        if table and (chains or jumps):
            out.extend([f"*{table}", *(f":{c} - [0:0]" for c in chains), *(f"-D {j}" for j in jumps),
                        *(f"-X {c}" for c in chains), "COMMIT"])

    for line in saved.splitlines():
        line = line.strip()
        if m := _TABLE.match(line):
            table, chains, jumps = m.group(1), [], []
        elif line == "COMMIT":
            close()
            table = None
        elif table and (m := _CHAIN.match(line)):
            if m.group(1).startswith("KUBE-"):
                chains.append(m.group(1))
        elif table and (m := _JUMP.match(line)) and not m.group(1).startswith("KUBE-"):
            jumps.append(f"{m.group(1)} {m.group(2)}")
    return "\n".join(out) + "\n" if out else ""


# ------------------------------------------------------------------------------------------------ lab services


@dataclass(frozen=True)
class Applied:
    """What apply() installed on every node: the real services' ClusterIPs first."""

    cluster_ips: tuple[str, ...]
    port: int
    protocol: str
    endpoints: tuple[str, ...]
    dummy_services: int
    rules: int  # per node namespace
    namespaces: tuple[str, ...]
    seconds: float  # wall time of the restores
    ports: tuple[tuple[int, str], ...] = ()  # every (port, protocol) of the real service; () = ((port, protocol),)
    mode: str = "iptables"  # or "nftables" (cniprof.lab.kubeproxy_nft)
    rules_read: dict[str, int] | None = None  # per node namespace: the rules read back after the install

    @property
    def cluster_ip(self) -> str:
        return self.cluster_ips[0]


def service_ip(offset: int) -> str:
    return str(SERVICE_CIDR.network_address + offset)


def cluster_cidr_of(topology: Topology) -> ipaddress.IPv4Network:
    """The cluster (pod) CIDR: the /16 that holds the pods, as kube-proxy's --cluster-cidr would say."""
    ips = [ipaddress.IPv4Address(p.ip) for p in topology.pods]
    if not ips:
        raise CniprofError("the lab has no pods to put a service in front of")
    net = ipaddress.IPv4Network(f"{ips[0]}/16", strict=False)
    if any(ip not in net for ip in ips):
        log.info("pods span more than %s; the masquerade rule uses it anyway", net)
    return net


def dummy_services(count: int, cluster_cidr: ipaddress.IPv4Network, avoid: Sequence[str] = ()) -> list[Service]:
    """`count` TCP services at 10.96.3.232 and up, each with one endpoint at a pod IP that does not exist.

    Endpoints come from the upper half of the cluster CIDR, which no lab assigns to pods.
    """
    if not 0 <= count <= MAX_DUMMIES:
        raise UsageError(f"dummy services must be 0..{MAX_DUMMIES}, not {count}")
    half = list(cluster_cidr.subnets(1))[1]
    if count > half.num_addresses - 2:
        raise UsageError(f"{count} dummy services do not fit in {half}")
    taken = {ipaddress.IPv4Address(a) for a in avoid}
    if any(a in half for a in taken):
        raise CniprofError(f"lab pods use {half}, where dummy service endpoints would go")
    return [
        Service("cniprof-dummy", f"svc-{i:05d}", "http", service_ip(DUMMY_OFFSET + i), DUMMY_PORT, "tcp",
                (f"{half.network_address + 1 + i}:{DUMMY_TARGET_PORT}",))
        for i in range(count)
    ]


def lab_services(topology: Topology, services: int, targets: Sequence[Pod],
                 ports: Sequence[tuple[int, str]]) -> list[Service]:
    """The dummy services, then one real service (one ClusterIP, a port each of `ports`) over `targets` (pure).

    Several ports: a study installs the service once for all of its generators (their servers listen on
    different ports)."""
    if not targets:
        raise UsageError("a service needs at least one target pod")
    if not ports:
        raise UsageError("a service needs at least one port")
    for port, protocol in ports:
        if not 1 <= port <= 65535:
            raise UsageError(f"service port must be 1..65535, not {port}")
        if protocol not in PROTOCOLS:
            raise UsageError(f"service protocol must be one of {', '.join(PROTOCOLS)}, not {protocol!r}")
    reals = [Service("default", "cniprof-svc", f"{protocol}-{port}", service_ip(REAL_OFFSET), port, protocol,
                     tuple(f"{p.ip}:{port}" for p in targets)) for port, protocol in dict.fromkeys(ports)]
    return [*dummy_services(services, cluster_cidr_of(topology), [p.ip for p in topology.pods]), *reals]


def lab_ruleset(topology: Topology, services: int, targets: Sequence[Pod], port: int,
                protocol: str = "udp") -> tuple[Ruleset, Service]:
    """The rules apply() installs: one real service over `targets`, after `services` dummy ones (pure)."""
    all_services = lab_services(topology, services, targets, [(port, protocol)])
    return ruleset(all_services, str(cluster_cidr_of(topology))), all_services[-1]


def targets_of(topology: Topology, target_pod: str | Sequence[str] | None) -> list[Pod]:
    names = [target_pod] if isinstance(target_pod, str) else list(target_pod or [])
    try:
        return [topology.pod(n) for n in names] if names else [default_target(topology)]
    except KeyError as e:
        raise UsageError(f"{e.args[0]}; pods: {', '.join(p.name for p in topology.pods)}") from None


def default_target(topology: Topology) -> Pod:
    """The first pod on another node than the first pod (pod-to-service across nodes), else the last pod."""
    if not topology.pods:
        raise CniprofError("the lab has no pods to put a service in front of")
    first = topology.pods[0]
    return next((p for p in topology.pods if p.node != first.node), topology.pods[-1])


def _restore_tool() -> str:
    tool = shutil.which("iptables-restore")
    if not tool:
        raise EnvironmentProblem("iptables-restore not found: install the Debian package iptables")
    return tool


def apply(topology: Topology, services: int = 0, target_pod: str | Sequence[str] | None = None,
          port: int = 5300, protocol: str = "udp", ports: Sequence[tuple[int, str]] = ()) -> Applied:
    """Install one ClusterIP service in front of target_pod (several pods: load-balanced) plus `services` dummy
    services, in every node namespace of the lab. Any earlier kube-proxy rules there are removed first.

    ports: every (port, protocol) the service exposes (default: port/protocol)."""
    return install(topology, IPTABLES, services, target_pod, ports or [(port, protocol)])


@dataclass(frozen=True)
class Backend:
    """How one kube-proxy mode's rules are written, loaded, counted and removed in a node namespace."""

    mode: str  # iptables | nftables
    render: Callable[[Sequence[Service], str], Ruleset]
    loader: Callable[[], list[str]]  # the command that reads the rules on stdin
    remove_in: Callable[[str], int]
    count_in: Callable[[str], int]


def install(topology: Topology, backend: Backend, services: int, target_pod: str | Sequence[str] | None,
            ports: Sequence[tuple[int, str]], count: bool = True) -> Applied:
    """The service and `services` dummies in every node namespace at once, all or nothing, in backend's mode.

    count=False skips reading the rules back (listing 20 000 nft chains takes tens of seconds); the rules per
    node are then the number written."""
    ports = tuple(dict.fromkeys(ports))
    all_services = lab_services(topology, services, targets_of(topology, target_pod), ports)
    rules = backend.render(all_services, str(cluster_cidr_of(topology)))
    real = all_services[-1]
    loader = backend.loader()
    namespaces = tuple(n.netns for n in topology.nodes)

    def one(netns: str) -> int:
        backend.remove_in(netns)
        run_in(netns, loader, stdin=rules.text, what=Path(loader[0]).name, timeout_s=RESTORE_TIMEOUT_S)
        return backend.count_in(netns) if count else rules.rules

    counts, seconds = install_all(namespaces, one, backend.remove_in)
    log.info("kube-proxy %s: %d rules per node (%d dummy services) in %.2f s", backend.mode, rules.rules,
             services, seconds)
    return Applied((real.cluster_ip,), ports[0][0], ports[0][1], real.endpoints, services, rules.rules, namespaces,
                   seconds, ports, backend.mode, dict(zip(namespaces, counts)))


def install_all(namespaces: Sequence[str], install: Callable[[str], int],
                remove_in: Callable[[str], int]) -> tuple[list[int], float]:
    """install(netns) on every node at once, all or nothing: after a failure (or Ctrl-C) no node keeps half a
    kube-proxy. Returns each node's install() result and the wall time."""
    start = time.monotonic()
    try:
        counts = _each(namespaces, install)
    except BaseException:
        try:
            _each(namespaces, remove_in)
        except CniprofError as e:
            log.warning("%s", e)
        raise
    return counts, time.monotonic() - start


def rule_count(netns: str) -> int:
    """The KUBE-* rules a node namespace holds now (read back with iptables-save)."""
    saved = run_in(netns, ["iptables-save"], what="iptables-save", timeout_s=RESTORE_TIMEOUT_S)
    return sum(1 for ln in saved.splitlines() if ln.startswith("-A ") and "KUBE-" in ln)


def remove(topology: Topology) -> int:
    """Remove every kube-proxy rule and chain from the lab's node namespaces; returns how many chains went."""
    return sum(_each(tuple(n.netns for n in topology.nodes), _remove_in))


def installed(topology: Topology) -> tuple[str, ...]:
    """The lab's node namespaces that hold kube-proxy chains (KUBE-*) now.

    apply() replaces and remove() deletes whatever KUBE-* chains a namespace has, so a caller that must leave
    rules it did not add alone (a trace on a reused lab) checks this first.
    """
    names = tuple(n.netns for n in topology.nodes)
    saved = _each(names, lambda ns: run_in(ns, ["iptables-save"], what="iptables-save",
                                           timeout_s=RESTORE_TIMEOUT_S))
    return tuple(ns for ns, text in zip(names, saved) if removal(text))


def _each(namespaces: Sequence[str], fn: Callable[[str], T]) -> list[T]:
    """fn(netns) for every namespace at once (each call mostly waits for its own iptables process; a 25 000-rule
    restore takes seconds). Every call finishes before the first error is raised."""
    with ThreadPoolExecutor(max_workers=max(1, len(namespaces)), thread_name_prefix="kubeproxy") as pool:
        futures = [pool.submit(fn, n) for n in namespaces]
        wait(futures)
    return [f.result() for f in futures]


def _remove_in(netns: str) -> int:
    saved = run_in(netns, ["iptables-save"], what="iptables-save", timeout_s=RESTORE_TIMEOUT_S)
    script = removal(saved)
    if script:
        run_in(netns, [_restore_tool(), "--noflush", "--wait"], stdin=script,
               what="iptables-restore (removal)", timeout_s=RESTORE_TIMEOUT_S)
    _drop_empty_tables(netns)
    return script.count("\n-X ")


def _drop_empty_tables(netns: str) -> None:
    """Delete the iptables-nft tables ip nat / ip filter when they hold no rule and no chain of their own.

    An empty iptables-nft table still registers its hooks (nat ones turn conntrack on), so leaving it would keep
    adding cost to every packet of the lab. Nothing to do with the legacy backend or without the nft tool.
    """
    nft = shutil.which("nft")
    if not nft:
        return
    for table in ("nat", "filter"):
        try:
            listing = run_in(netns, [nft, "list", "table", "ip", table], what="nft list",
                             timeout_s=RESTORE_TIMEOUT_S)
        except CniprofError:
            continue  # no such table
        if _empty_iptables_table(listing, BUILTIN[table]):
            run_in(netns, [nft, "delete", "table", "ip", table], what="nft delete table",
                   timeout_s=RESTORE_TIMEOUT_S)


def _empty_iptables_table(listing: str, builtin: Sequence[str]) -> bool:
    """True when an `nft list table` output has only built-in chains, no rules and accept policies (pure)."""
    chains = re.findall(r"^\s*chain (\S+) \{", listing, re.MULTILINE)
    body = [ln.strip() for ln in listing.splitlines() if ln.strip()]
    allowed = re.compile(r"^(table |chain |type .* policy accept;$|\})")
    return set(chains) <= set(builtin) and all(allowed.match(ln) for ln in body)


IPTABLES = Backend("iptables", ruleset, lambda: [_restore_tool(), "--noflush", "--wait"], _remove_in, rule_count)
