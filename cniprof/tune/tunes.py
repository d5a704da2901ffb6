# SPDX-License-Identifier: Apache-2.0
"""The tunings `cniprof tune` can try, by the names the advice catalog (cniprof advise) uses.

Each one is a bench tuning spec (cniprof.lab.tunings) built for the lab as it is, plus whether the generators
are unpinned for the tuned runs. A name whose tuning is not implemented yet stays in the table with `not_yet`
(one line said to the user), so adding it later is one entry: give it `spec` (and, for services and netfilter
tunings, the connect generator). Generators: iperf3 TCP throughput unless the tuning acts per connection (connect)
or moves work between CPUs (iperf3-4: four streams, more than one CPU of work).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from cniprof.cni.topology import Topology
from cniprof.errors import UsageError
from cniprof.lab import kubeproxy_switch
from cniprof.run import inject
from cniprof.run.generators import GeneratorSpec

# --generator choices -> the scenario generator spec generators.make runs
GENERATORS: dict[str, GeneratorSpec] = {
    "iperf3": GeneratorSpec("iperf3", "iperf3", {}),
    # parallel streams: the load a second CPU can take (one TCP stream is one CPU's work wherever it runs)
    "iperf3-4": GeneratorSpec("iperf3-4", "iperf3", {"streams": 4}),
    "iperf3-udp": GeneratorSpec("iperf3-udp", "iperf3", {"udp": True, "bitrate": "0"}),  # 0: as fast as it goes
    "sockperf": GeneratorSpec("sockperf", "sockperf", {}),
    "connect": GeneratorSpec("connect", "connect_rate", {}),
    "wrk": GeneratorSpec("wrk", "wrk", {}),
}
OFFLOAD_ROLES = ["vxlan", "tunnel", "veth"]
JUMBO_MTU = 9000


@dataclass(frozen=True)
class Tune:
    name: str
    summary: str
    spec: Callable[[Topology], dict[str, Any]] | None = None  # None: not available yet
    generator: str = "iperf3"
    unpin: bool = False  # tuned runs start the generators on every CPU
    not_yet: str = ""
    path: str | None = None  # the path it is measured on when --path is not given (None: the model's default)
    # once before the pairs: installs what the tuned runs switch to (removed by the stack at the end)
    prepare: Callable[[ExitStack, Topology], None] | None = None


def _offloads_on(topo: Topology) -> dict[str, Any]:
    return {"offloads": {"gso": "on", "tso": "on", "tx-checksum": "on", "gro": "on", "devices": OFFLOAD_ROLES}}


def _mtu_match(topo: Topology) -> dict[str, Any]:
    if not any(d.role in inject.TUNNEL_ROLES for d in topo.devices()):
        raise UsageError(f"mtu-match: the {topo.cni}/{topo.mode} lab has no tunnel, so no encapsulation to fit")
    return {"mtu": inject.underlay_mtu(topo)}  # overlay and pods get the underlay's MTU minus the encap overhead


def _injected_services(topo: Topology) -> Any:
    service = inject.injected_service(topo)
    if service is None:
        raise UsageError("kube-proxy-nftables needs kube-proxy services in the lab: "
                         "`cniprof lab inject services=10000` first")
    return service


def _nftables_mode(topo: Topology) -> dict[str, Any]:
    _injected_services(topo)
    return {"kube_proxy_mode": "nftables"}


def _stage_nftables(stack: ExitStack, topo: Topology) -> None:
    kubeproxy_switch.stage(stack, topo, _injected_services(topo))


TUNES: dict[str, Tune] = {t.name: t for t in (
    Tune("offloads-on", "gso/tso/tx-checksum/gro on for the tunnel and veth devices", _offloads_on),
    Tune("mtu-match", "overlay and pod MTU = underlay MTU - encapsulation overhead", _mtu_match),
    Tune("jumbo-mtu", f"underlay MTU {JUMBO_MTU}, overlay and pods derived", lambda t: {"mtu": JUMBO_MTU}),
    Tune("rps-spread", "RPS and XPS over all CPUs on the veth and underlay devices",
         lambda t: {"rps": "all", "xps": "all"}, generator="iperf3-4"),
    Tune("unpin-generators", "generators on all CPUs instead of the injected pinning", lambda t: {}, unpin=True,
         generator="iperf3-4"),
    Tune("notrack", "raw-table NOTRACK for pod-to-pod and VXLAN traffic (conntrack bypass)",
         lambda t: {"notrack": True}, generator="connect"),
    Tune("kube-proxy-nftables", "kube-proxy in nftables mode (one verdict-map lookup) instead of iptables",
         _nftables_mode, generator="connect", path="pod-to-service", prepare=_stage_nftables),
    Tune("host-gw", "pod routes via the other node's underlay address instead of the VXLAN device (flannel "
         "host-gw backend)", lambda t: {"routing": "host-gw"}),
    Tune("netdev-backlog", "net.core.netdev_max_backlog raised",
         not_yet="netdev-backlog changes the whole machine, which tune does not do: measure it with a scenario "
                 "that says `host_changes: true` and `sysctl: {net.core.netdev_max_backlog: N}` (cniprof run)"),
)}


def get(name: str) -> Tune:
    """The tune by name; UsageError for an unknown one or one not available yet."""
    tune = TUNES.get(name.strip().lower())
    if tune is None:
        raise UsageError(f"unknown tuning {name!r}; available: {', '.join(available())}")
    if tune.spec is None:
        raise UsageError(tune.not_yet)
    return tune


def available() -> list[str]:
    return [t.name for t in TUNES.values() if t.spec is not None]


def generator(tune: Tune, override: str | None) -> GeneratorSpec:
    name = override or tune.generator
    if name not in GENERATORS:
        raise UsageError(f"unknown --generator {name!r}; supported: {', '.join(GENERATORS)}")
    return GENERATORS[name]
