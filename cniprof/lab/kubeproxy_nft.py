# SPDX-License-Identifier: Apache-2.0
"""kube-proxy's nftables mode in the lab: the same services as cniprof.lab.kubeproxy, found through a verdict map.

Why: kube-proxy's iptables mode makes the first packet of every connection walk a KUBE-SERVICES chain with one
rule per service port, so its cost grows with the cluster's service count (the "10 000 services" problem). The
nftables mode (GA in Kubernetes 1.33) looks the service up in one verdict map keyed by
`ip daddr . meta l4proto . th dport`: a hash lookup whatever the count. This module writes that layout, shaped
like kube-proxy's own (table `ip kube-proxy`, chain names `service-<hash>-<ns>/<name>/<proto>/<port name>` and
`endpoint-<hash>-...__<ip>/<port>`), for the same dummy and real services, so the two modes can be compared:

    nat-prerouting / nat-output (dstnat) -> services: ip daddr . meta l4proto . th dport vmap @service-ips
        -> service-* (masquerade mark for traffic from outside the cluster CIDR; numgen picks an endpoint)
        -> endpoint-* (DNAT)
    nat-postrouting (srcnat) -> masquerading (what mark-for-masquerade marked)
    filter-forward: ct state invalid drop

One `nft -f` per node namespace installs everything (one transaction); remove() deletes the table, which takes
every chain, map and hook with it. The ruleset text (`ruleset`) is pure and unit-tested.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Sequence

from cniprof.cni.topology import Topology
from cniprof.errors import CniprofError, EnvironmentProblem
from cniprof.lab import kubeproxy
from cniprof.lab.kubeproxy import Applied, Ruleset, Service
from cniprof.netns_exec import run_in

log = logging.getLogger(__name__)

TABLE = "kube-proxy"
MODE = "nftables"
MASQ_BIT = "0x4000"


def _hash8(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8].upper()


def _name(svc: Service) -> str:
    return f"{svc.namespace}/{svc.name}/{svc.protocol}/{svc.port_name}"


def service_chain(svc: Service) -> str:
    return f"service-{_hash8(_name(svc))}-{_name(svc)}"


def endpoint_chain(svc: Service, endpoint: str) -> str:
    ip, port = endpoint.rsplit(":", 1)
    return f"endpoint-{_hash8(_name(svc) + endpoint)}-{_name(svc)}__{ip}/{port}"


def _chain(name: str, *lines: str) -> list[str]:
    return [f"  chain {name} {{", *(f"    {ln}" for ln in lines), "  }"]


def ruleset(services: Sequence[Service], cluster_cidr: str) -> Ruleset:
    """`nft -f` input for the services (pure); Ruleset.rules counts rules in chains plus map elements."""
    for s in services:
        if s.protocol not in kubeproxy.PROTOCOLS or not s.endpoints:
            raise CniprofError(f"service {s.port_name_string}: bad protocol or no endpoint")
    elements = ", ".join(f"{s.cluster_ip} . {s.protocol} . {s.port} : goto {service_chain(s)}" for s in services)
    lines = [f"table ip {TABLE} {{",
             "  map service-ips {", "    type ipv4_addr . inet_proto . inet_service : verdict",
             *([f"    elements = {{ {elements} }}"] if services else []), "  }"]
    lines += _chain("mark-for-masquerade", f"meta mark set meta mark | {MASQ_BIT}")
    lines += _chain("masquerading", f"meta mark & {MASQ_BIT} == 0 return", f"meta mark set meta mark ^ {MASQ_BIT}",
                    "masquerade fully-random")
    lines += _chain("services", "ip daddr . meta l4proto . th dport vmap @service-ips")
    lines += _chain("nat-prerouting", "type nat hook prerouting priority dstnat; policy accept;", "jump services")
    lines += _chain("nat-output", "type nat hook output priority -100; policy accept;", "jump services")
    lines += _chain("nat-postrouting", "type nat hook postrouting priority srcnat; policy accept;",
                    "jump masquerading")
    lines += _chain("filter-forward", "type filter hook forward priority filter; policy accept;",
                    "ct state invalid drop")
    rules = 1 + 3 + 1 + 1 + 1 + 1 + 1 + len(services)
    for s in services:
        n = len(s.endpoints)
        picks = ", ".join(f"{i} : goto {endpoint_chain(s, ep)}" for i, ep in enumerate(s.endpoints))
        lines += _chain(service_chain(s),
                        f"ip daddr {s.cluster_ip} {s.protocol} dport {s.port} ip saddr != {cluster_cidr} "
                        "jump mark-for-masquerade",
                        f"numgen random mod {n} vmap {{ {picks} }}")
        rules += 2
        for ep in s.endpoints:
            ip = ep.rsplit(":", 1)[0]
            lines += _chain(endpoint_chain(s, ep), f"ip saddr {ip} jump mark-for-masquerade",
                            f"meta l4proto {s.protocol} dnat to {ep}")
            rules += 2
    lines.append("}")
    chains = ("mark-for-masquerade", "masquerading", "services", "nat-prerouting", "nat-output", "nat-postrouting",
              "filter-forward", *(service_chain(s) for s in services),
              *(endpoint_chain(s, ep) for s in services for ep in s.endpoints))
    return Ruleset("\n".join(lines) + "\n", {TABLE: chains}, rules)


def _nft() -> str:
    tool = shutil.which("nft")
    if not tool:
        raise EnvironmentProblem("nft not found: install the Debian package nftables")
    return tool


def _has_table(netns: str) -> bool:
    # `list tables`, not `list table`: listing 20 000 chains takes tens of seconds on a loaded machine
    tables = run_in(netns, [_nft(), "list", "tables"], what="nft list tables",
                    timeout_s=kubeproxy.RESTORE_TIMEOUT_S)
    return f"table ip {TABLE}" in tables.splitlines()


def _remove_in(netns: str) -> int:
    if not _has_table(netns):
        return 0
    run_in(netns, [_nft(), "delete", "table", "ip", TABLE], what="nft delete table",
           timeout_s=kubeproxy.RESTORE_TIMEOUT_S)
    return 1


def rule_count(netns: str) -> int:
    """Rules in the table's chains plus the service map's elements, read back with `nft list table`."""
    return count_rules(run_in(netns, [_nft(), "list", "table", "ip", TABLE], what="nft list table",
                              timeout_s=kubeproxy.RESTORE_TIMEOUT_S))


def count_rules(listing: str) -> int:
    """Rules in the chains of an `nft list table` output plus the elements of its service map (pure)."""
    rules, in_chain = 0, False
    for line in (ln.strip() for ln in listing.splitlines()):
        if line.startswith("chain "):
            in_chain = True
        elif line == "}":
            in_chain = False
        elif in_chain and line and not line.startswith("type "):
            rules += 1
    return rules + listing.count(": goto service-")


def apply(topology: Topology, services: int = 0, target_pod: str | Sequence[str] | None = None,
          ports: Sequence[tuple[int, str]] = ((5300, "udp"),), count: bool = True) -> Applied:
    """kube-proxy nftables-mode rules in every node namespace (all or nothing); any earlier table is replaced.

    count=False skips reading the rules back (listing 20 000 chains takes tens of seconds)."""
    return kubeproxy.install(topology, NFTABLES, services, target_pod, ports, count)


def remove(topology: Topology) -> int:
    """Delete the kube-proxy table from every node namespace; how many there were."""
    return sum(kubeproxy._each(tuple(n.netns for n in topology.nodes), _remove_in))


def installed(topology: Topology) -> tuple[str, ...]:
    """The lab's node namespaces that hold an `ip kube-proxy` table now."""
    names = tuple(n.netns for n in topology.nodes)
    return tuple(ns for ns, has in zip(names, kubeproxy._each(names, _has_table)) if has)


NFTABLES = kubeproxy.Backend(MODE, ruleset, lambda: [_nft(), "-f", "-"], _remove_in, rule_count)
