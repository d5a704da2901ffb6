# SPDX-License-Identifier: Apache-2.0
"""Problems injected into the lab on purpose (`cniprof lab up --inject NAME`, `cniprof lab inject NAME`), so that
findings and `cniprof tune` can be checked against a known cause.

An injection is a set of bench tunings (cniprof.lab.tunings) applied once and never reverted by itself: every
device it changes lives in a lab namespace, so `lab down` (deleting the namespaces) takes it away, and nothing
outside the lab is touched. softirq-one-cpu also pins the generators: that is not a device setting but a note in
the lab state (Topology.injections) which trace and tune read back (`pinned_cpus`) around each generator start.

Names:
  offloads-off     gso, tso and tx-checksum off on the tunnel devices (flannel.1) of both nodes
  mtu-mismatch     the nodes' underlay eth0 lowered to the overlay's MTU (1500 -> 1450 with VXLAN), pods and
                   tunnel untouched: a full-size pod packet (1450) becomes a 1500-byte outer packet on a
                   1450-byte link, so it must be fragmented (or its sender told to shrink)
  softirq-one-cpu  RPS and XPS off on every lab device, and every generator process pinned to CPU 0
  services=N       kube-proxy (iptables mode) on both nodes with N dummy services and one real ClusterIP service in
                   front of the default target pod, exposing every port trace and tune generators use; traces and
                   tunes on --path pod-to-service send to it (`injected_service`)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from cniprof.cni import registry
from cniprof.cni.topology import Topology
from cniprof.errors import CniprofError, UsageError
from cniprof.lab import kubeproxy, saved, tunings
from cniprof.run import generators, pod_to_service

PIN_CPUS = "0"  # softirq-one-cpu: where the generators run
TUNNEL_ROLES = ("vxlan", "tunnel")
SERVICES_PREFIX = "services="


@dataclass(frozen=True)
class Injection:
    name: str
    summary: str
    refusal: Callable[[Topology], str | None]  # why it makes no sense on this lab, or None
    tunings: Callable[[Topology], dict[str, Any]]  # the device settings it applies (bench tuning spec)
    pin: str | None = None  # CPUs the generators are pinned to while it is in place


def _roles(topo: Topology) -> set[str]:
    return {d.role for d in topo.devices()}


def _needs_tunnel(topo: Topology) -> str | None:
    if _roles(topo) & set(TUNNEL_ROLES):
        return None
    return f"the {topo.cni}/{topo.mode} lab has no tunnel device (vxlan/tunnel role)"


def _needs_veth_or_underlay(topo: Topology) -> str | None:
    if _roles(topo) & {"host_veth", "pod_veth", "underlay"}:
        return None
    return f"the {topo.cni}/{topo.mode} lab has no veth or underlay device to steer"


def overlay_mtu(topo: Topology) -> int:
    """The MTU of the lab's tunnel device (the overlay MTU the pods were given)."""
    dev = next(d for d in topo.devices() if d.role in TUNNEL_ROLES)
    return int(tunings.link_info(tunings.Dev(dev.netns, dev.name, dev.role))["mtu"])


def underlay_mtu(topo: Topology) -> int:
    dev = next((d for d in topo.devices() if d.role == "underlay"), None)
    if dev is None:
        raise CniprofError(f"the {topo.cni}/{topo.mode} lab has no underlay device")
    return int(tunings.link_info(tunings.Dev(dev.netns, dev.name, dev.role))["mtu"])


def _underlay_only_mtu(topo: Topology) -> dict[str, Any]:
    # not the bench `mtu` tuning: that one would shrink the overlay and pods with it, which is the fix, not the fault
    return {"underlay_mtu": overlay_mtu(topo)}


INJECTIONS: dict[str, Injection] = {
    i.name: i for i in (
        Injection("offloads-off", "gso, tso, tx-checksum off on the tunnel devices", _needs_tunnel,
                  lambda t: {"offloads": {"gso": "off", "tso": "off", "tx-checksum": "off",
                                          "devices": ["vxlan", "tunnel"]}}),
        Injection("mtu-mismatch", "underlay MTU lowered to the overlay MTU: full-size pod packets fragment",
                  _needs_tunnel, _underlay_only_mtu),
        Injection("softirq-one-cpu", f"RPS/XPS off, generators pinned to CPU {PIN_CPUS}", _needs_veth_or_underlay,
                  lambda t: {"rps": "none", "xps": "none"}, pin=PIN_CPUS),
    )
}


def check_name(name: str) -> str:
    """The injection's canonical name; UsageError (one line) for an unknown or not yet available one."""
    key = name.strip().lower()
    if key.startswith(SERVICES_PREFIX):
        count = key[len(SERVICES_PREFIX):]
        if not count.isdigit() or not 0 <= int(count) <= kubeproxy.MAX_DUMMIES:
            raise UsageError(f"services=N needs N in 0..{kubeproxy.MAX_DUMMIES}, not {count!r}")
        return f"{SERVICES_PREFIX}{int(count)}"
    if key not in INJECTIONS:
        raise UsageError(f"unknown injection {name!r}; available: {', '.join(INJECTIONS)}, services=N")
    return key


def _changes(topo: Topology, spec: dict[str, Any]) -> list[tunings.Change]:
    if "underlay_mtu" in spec:
        mtu = int(spec["underlay_mtu"])
        changes = []
        for dev in (d for d in tunings.devices(topo) if d.role == "underlay"):
            old = int(tunings.link_info(dev)["mtu"])
            if old != mtu:
                changes.append(tunings.Change(dev, f"mtu {old}->{mtu}", ("ip", "link", "set", "dev", dev.name,
                                                                        "mtu", str(mtu)),
                                              ("ip", "link", "set", "dev", dev.name, "mtu", str(old))))
        return changes
    return tunings.plan(topo, spec)


def apply(topo: Topology, names: list[str]) -> tuple[Topology, list[str]]:
    """Apply the named injections to the lab that is up and record them; returns (topology, change lines).

    Each name is checked (known, sensible on this lab) before anything changes. An injection already in place
    is skipped. The changes stay until `lab down`."""
    wanted = list(dict.fromkeys(check_name(n) for n in names))
    for name in wanted:
        if name.startswith(SERVICES_PREFIX):
            reason = _services_refusal(topo, name)
            if reason:
                raise UsageError(f"cannot inject {name}: {reason}")
            continue
        reason = INJECTIONS[name].refusal(topo)
        if reason:
            raise UsageError(f"cannot inject {name}: {reason}")
    done: list[str] = []
    for name in wanted:
        if name in topo.injections:
            done.append(f"{name}: already injected")
            continue
        if name.startswith(SERVICES_PREFIX):
            svc = _install_services(topo, int(name[len(SERVICES_PREFIX):]))
            done.append(f"{name}: kube-proxy iptables rules, {svc.rules:,} per node, ClusterIP {svc.cluster_ip} "
                        f"-> {', '.join(svc.endpoints[:1])} ({svc.seconds:.1f} s)")
            topo = replace(topo, injections=(*topo.injections, name))
            with saved.locked():
                saved.save(topo)
            continue
        inj = INJECTIONS[name]
        for change in _changes(topo, inj.tunings(topo)):
            tunings.run_change(change)
            done.append(f"{name}: {change.dev.netns}/{change.dev.name} {change.what}")
        if inj.pin is not None:
            done.append(f"{name}: generators of trace/tune pinned to CPU {inj.pin}")
        topo = replace(topo, injections=(*topo.injections, name))
        with saved.locked():
            saved.save(topo)  # after each one: a failure halfway still leaves the state telling what is in place
    return topo, done


def service_ports() -> list[tuple[int, str]]:
    """Every (port, protocol) that trace (--traffic iperf3/udp) and the tune generators send to a ClusterIP."""

    ports = [(port, pod_to_service.PROTOCOLS[tool]) for tool, port in pod_to_service.PORTS.items()]
    return list(dict.fromkeys(ports + generators.every_service_port()))


def _services_refusal(topo: Topology, name: str) -> str | None:
    if any(n.startswith(SERVICES_PREFIX) for n in topo.injections) and name not in topo.injections:
        return f"the lab already has {next(n for n in topo.injections if n.startswith(SERVICES_PREFIX))}"
    if kubeproxy.installed(topo) and name not in topo.injections:
        return "the lab already holds kube-proxy rules cniprof did not inject"

    model = registry.parse(f"{topo.cni}:{topo.mode}")
    return model.no_services or None


def _install_services(topo: Topology, count: int) -> kubeproxy.Applied:
    return kubeproxy.apply(topo, services=count, target_pod=kubeproxy.default_target(topo).name,
                           ports=service_ports())


def injected_service(topo: Topology | None) -> kubeproxy.Applied | None:
    """The ClusterIP service a services=N injection installed (rebuilt from the same pure inputs), or None."""
    name = next((n for n in (topo.injections if topo is not None else ()) if n.startswith(SERVICES_PREFIX)), None)
    if name is None or topo is None:
        return None
    count = int(name[len(SERVICES_PREFIX):])
    target = kubeproxy.default_target(topo)
    ports = tuple(service_ports())
    all_services = kubeproxy.lab_services(topo, count, [target], ports)
    rules = kubeproxy.ruleset(all_services, str(kubeproxy.cluster_cidr_of(topo)))
    real = all_services[-1]
    return kubeproxy.Applied((real.cluster_ip,), ports[0][0], ports[0][1], real.endpoints, count, rules.rules,
                             tuple(n.netns for n in topo.nodes), 0.0, ports, "iptables")


def pinned_cpus(topo: Topology | None) -> str | None:
    """The CPUs generators must run on because of an injection (None: no pinning)."""
    for name in (topo.injections if topo is not None else ()):
        pin = INJECTIONS.get(name)
        if pin is not None and pin.pin is not None:
            return pin.pin
    return None


def describe(topo: Topology) -> str:
    return ", ".join(topo.injections) if topo.injections else "none"
