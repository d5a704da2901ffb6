# SPDX-License-Identifier: Apache-2.0
"""Switch a lab's kube-proxy from iptables mode to nftables mode and back in O(1), for paired measurements.

Why not remove one mode's rules and install the other's for every run: 10 000 services take minutes to install
(KNOWN_ISSUES.md), and `cniprof tune` alternates baseline and tuned runs many times. Instead both rule sets are
kept: the nftables table is staged once with its two entry rules (`jump services` in nat-prerouting and
nat-output) removed, so it matches nothing; switching to nftables mode deletes iptables' two jumps into
KUBE-SERVICES and adds nftables' two jumps, and the revert does the reverse. A packet then walks exactly one mode's
lookup, as on a node where kube-proxy runs in that mode (kube-proxy deletes the other mode's rules when it starts).
"""

from __future__ import annotations

from contextlib import ExitStack

from cniprof.cni.topology import Topology
from cniprof.errors import UsageError
from cniprof.lab import kubeproxy, kubeproxy_nft
from cniprof.netns_exec import run_in

ENTRY_CHAINS = {"PREROUTING": "nat-prerouting", "OUTPUT": "nat-output"}  # iptables base chain -> nft base chain
PORTALS = ("-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES")


def stage(stack: ExitStack, topo: Topology, services: kubeproxy.Applied) -> None:
    """Install the nftables-mode rules for the same services beside the iptables ones, inactive; `stack` removes
    them. Refuses a lab whose services are not in iptables mode."""
    if services.mode != "iptables":
        raise UsageError(f"kube-proxy-nftables: the lab's services are already in {services.mode} mode")
    stack.callback(kubeproxy_nft.remove, topo)
    target = [e.rsplit(":", 1)[0] for e in services.endpoints]
    pods = [p.name for p in topo.pods if p.ip in target]
    kubeproxy_nft.apply(topo, services=services.dummy_services, target_pod=pods, ports=services.ports,
                        count=False)
    for node in topo.nodes:
        for chain in ENTRY_CHAINS.values():
            run_in(node.netns, ["nft", "flush", "chain", "ip", kubeproxy_nft.TABLE, chain],
                   what="nft flush chain", timeout_s=kubeproxy.RESTORE_TIMEOUT_S)
