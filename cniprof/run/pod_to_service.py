# SPDX-License-Identifier: Apache-2.0
"""`cniprof trace --path pod-to-service`: traffic to a kube-proxy ClusterIP in front of the destination pod.

Why a path of its own: on a real node most pod traffic goes to a service, and kube-proxy's iptables mode makes
the first packet of every connection walk a KUBE-SERVICES chain as long as the cluster has service ports. The lab
gets the same rules (cniprof.lab.kubeproxy) for the run, with `services` dummy services to scale them.

The packets take the cross-node chain: the client node DNATs the ClusterIP to the destination pod in PREROUTING
(a netfilter hook inside the "ip forward" hop), then forwards as for pod-to-pod traffic. Only the forward
direction's start-point filter changes (pod-a -> ClusterIP is what leaves pod-a's eth0); replies come from the
pod's own IP and are un-DNATed on the client node, so direction 1 is unchanged.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import shutil
import subprocess
from contextlib import ExitStack
from typing import Any

from cniprof.cni.topology import Pod, Topology
from cniprof.errors import EnvironmentProblem, UsageError
from cniprof.lab import kubeproxy, kubeproxy_nft
from cniprof.netns_exec import attempt_in
from cniprof.probes.plan import Plan
from cniprof.traffic.udp_burst import MAX_FLOWS

log = logging.getLogger(__name__)

PATH = "pod-to-service"
CHAIN_PATH = "cross-node"  # the model chain the packets follow (DNAT happens on the client node)
PORTS = {"iperf3": 5201, "udp": 5300}  # the service port = the generator's server port (targetPort alike)
PROTOCOLS = {"iperf3": "tcp", "udp": "udp"}
NFT_TABLES = ("nat", "filter")  # the iptables-nft tables kube-proxy's rules go into
NFT_TIMEOUT_S = 30
MODES = ("iptables", kubeproxy_nft.MODE)


def chain_path(path: str) -> str:
    """The model path whose chain a trace of `path` follows."""
    return CHAIN_PATH if path == PATH else path


def check(traffic: str, services: int, count: int) -> None:
    """Everything a user can fix before the lab is touched; one line each."""
    if not 0 <= services <= kubeproxy.MAX_DUMMIES:
        raise UsageError(f"--services must be 0..{kubeproxy.MAX_DUMMIES}, not {services}")
    if traffic not in (*PORTS, "none"):
        raise UsageError(f"--path {PATH} works with --traffic {', '.join(PORTS)} or none; kube-proxy does not "
                         f"forward {traffic} to a ClusterIP")
    if traffic == "udp" and count > MAX_FLOWS:
        raise UsageError(f"--path {PATH} sends every udp datagram from its own socket (a new connection each): "
                         f"--count at most {MAX_FLOWS}, not {count}")
    for tool in ("iptables-restore", "iptables-save"):
        if shutil.which(tool) is None:
            raise EnvironmentProblem(f"{tool} not found: install the Debian package iptables")


def install(stack: ExitStack, topo: Topology, target: Pod, services: int, traffic: str) -> kubeproxy.Applied:
    """The ClusterIP service in front of `target` (+ `services` dummies) for `--traffic`, removed by `stack`."""
    return install_service(stack, topo, target, services,
                           [(PORTS.get(traffic, PORTS["udp"]), PROTOCOLS.get(traffic, "udp"))])


def install_service(stack: ExitStack, topo: Topology, target: Pod, services: int,
                    ports: list[tuple[int, str]], mode: str = "iptables") -> kubeproxy.Applied:
    """The ClusterIP service (every (port, protocol) of `ports`) in front of `target` plus `services` dummies on
    every node, in kube-proxy's iptables or nftables mode; removed by `stack`.

    Refuses a lab that already holds kube-proxy rules of either mode: apply() would replace them and the removal
    delete them, and they are not this run's to touch. Tables the lab had before are put back as they were (see
    restore_tables).
    """
    if mode not in MODES:
        raise UsageError(f"kube-proxy mode must be one of {', '.join(MODES)}, not {mode!r}")
    held = (*kubeproxy.installed(topo), *(kubeproxy_nft.installed(topo) if shutil.which("nft") else ()))
    if held:
        raise UsageError(f"the lab already holds kube-proxy rules this run did not add ({', '.join(held)}); "
                         "`cniprof lab down` removes them with the lab")
    # registered before apply() (the stack unwinds in reverse: remove, then restore): a Ctrl-C between apply()
    # returning and the registration still removes the rules
    if mode == "nftables":
        stack.callback(kubeproxy_nft.remove, topo)
        return kubeproxy_nft.apply(topo, services=services, target_pod=target.name, ports=ports)
    stack.callback(restore_tables, nft_tables(topo))
    stack.callback(kubeproxy.remove, topo)
    return kubeproxy.apply(topo, services=services, target_pod=target.name, ports=ports)


def _nft(netns: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return attempt_in(netns, ["nft", *args], stdin=stdin, timeout_s=NFT_TIMEOUT_S, what="nft")


def nft_tables(topo: Topology) -> dict[tuple[str, str], str | None]:
    """`nft list table ip <t>` of the kube-proxy tables in every node namespace (None: no such table; {} without
    the nft tool, as kubeproxy then leaves tables alone too)."""
    if shutil.which("nft") is None:
        return {}
    out: dict[tuple[str, str], str | None] = {}
    for node in topo.nodes:
        for table in NFT_TABLES:
            p = _nft(node.netns, "list", "table", "ip", table)
            out[(node.netns, table)] = p.stdout if p.returncode == 0 else None
    return out


def _chains(listing: str) -> set[str]:
    return set(re.findall(r"^\s*chain (\S+) \{", listing, re.MULTILINE))


def restore_tables(before: dict[tuple[str, str], str | None]) -> None:
    """Put back what kubeproxy.remove() took that was not this run's.

    remove() deletes every iptables-nft nat/filter table it finds empty, also one the lab had before the run (an
    earlier `iptables -I` ... `-D` leaves one); such a table is recreated from its listing. Base chains this run's
    rules added to a table that was there are deleted again while empty. Failures are logged, not raised: this
    runs while the run is being torn down.
    """
    for (netns, table), was in before.items():
        if was is None:
            continue
        p = _nft(netns, "list", "table", "ip", table)
        if p.returncode != 0:
            r = _nft(netns, "-f", "-", stdin=was)
            if r.returncode != 0:
                log.warning("could not restore table ip %s in %s: %s", table, netns, r.stderr.strip())
            continue
        for chain in sorted(_chains(p.stdout) - _chains(was)):
            r = _nft(netns, "delete", "chain", "ip", table, chain)  # refused (kept) when it has rules
            if r.returncode != 0:
                log.info("kept chain %s of ip %s in %s: %s", chain, table, netns, r.stderr.strip())


def check_target(service: kubeproxy.Applied, target: Pod) -> None:
    """A service installed before the run (a study's, an injected one) must forward to the pod traced as the
    destination; UsageError otherwise."""
    if not any(e.startswith(f"{target.ip}:") for e in service.endpoints):
        raise UsageError(f"the lab's service forwards to {', '.join(service.endpoints)}, not to {target.name}; "
                         "choose that pod with --dst")


def retarget(plan: Plan, cluster_ip: str) -> Plan:
    """The plan with the forward direction's start-point filter on dst = the ClusterIP (as pod-a sends it)."""
    dirs = tuple(dataclasses.replace(d, dst_ip=cluster_ip) if d.dir == 0 else d for d in plan.directions)
    return dataclasses.replace(plan, directions=dirs)


def describe(applied: kubeproxy.Applied, target: Pod) -> dict[str, Any]:
    """The `service` block of the run's summary (JSON-ready)."""
    return {"cluster_ip": applied.cluster_ip, "port": applied.port, "protocol": applied.protocol,
            "target_pod": target.name, "endpoints": list(applied.endpoints),
            "dummy_services": applied.dummy_services, "rules_per_node": applied.rules, "mode": applied.mode,
            "ports": [f"{p}/{proto}" for p, proto in applied.ports], "rules_read": applied.rules_read,
            "apply_s": round(applied.seconds, 3)}
