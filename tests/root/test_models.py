# SPDX-License-Identifier: Apache-2.0
"""Every CNI model this kernel supports, built for real and traced: the kernel's path must be the model's chain.

Per model: lab up, then for each of its paths a paced burst of exactly 23 UDP datagrams (one direction) with the
default probe events, the default path again with every event (the full chain, rx included), and a few pings on
pod-to-host (its reply chain is not the mirror of the request's). Every expected hop inside the end-to-end path
must count exactly the packets sent, and the path check must find nothing: no missing hop, no unexpected pair,
nothing ending off the path. Then lab down must leave no namespace and no state behind.

Each test builds and removes its own lab, so they are `lab_destructive` (run after every test using the session
flannel lab, which `no_lab` removes first).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cniprof.analysis import path_check
from cniprof.cni import registry
from cniprof.cni.topology import Topology
from cniprof.errors import UsageError
from cniprof.lab import cleanup, kernel, realize, saved
from cniprof.probes.plan import FULL_EVENTS
from cniprof.run import trace

pytestmark = pytest.mark.root

N = 23
PINGS = 5
SPECS = ("flannel:vxlan", "flannel:host-gw", "calico:bgp", "calico:vxlan", "calico:ipip", "cilium:vxlan",
         "cilium:native", "bridge", "macvlan", "host")
TUNNEL_ROLES = {"vxlan", "tunnel"}


def _missing_reason(spec: str) -> str | None:
    model = registry.parse(spec)
    gone = kernel.missing(model.requires)
    return str(kernel.missing_error(model.spec, *gone[0])) if gone else None


def _run(spec: str, path: str, **kw) -> trace.TraceResult:
    opts = trace.TraceOptions(cni=spec, path=path, duration_s=3.0, interval_s=0.2, sample_every=1, **kw)
    return trace.run(opts)


def _expected(snapshot: dict, direction: int) -> list[dict]:
    return sorted((h for h in snapshot["hops"] if h["expected"] and h["dir"] == direction), key=lambda h: h["seq"])


def _problems(res: trace.TraceResult, directions: tuple[int, ...], count: int) -> list[str]:
    """Everything that differs from "exactly `count` packets along exactly the model's chain"."""
    out = []
    label = f"{res.model.spec} {res.record.snapshot['directions'][0]['src_pod']}→{res.record.snapshot['directions'][0]['dst_pod']}"
    for d in directions:
        for h in _expected(res.record.snapshot, d):
            if h["in_e2e"] and h["count"] != count:
                out.append(f"{label} dir {d} hop {h['seq']} {h['role']!r}: {h['count']} packets, not {count}")
        e2e = next(e for e in res.record.snapshot["e2e"] if e["dir"] == d)
        if e2e["count"] != count:
            out.append(f"{label} dir {d}: {e2e['count']} packets end to end, not {count}")
    check = path_check.check(res.record.snapshot)
    if not check.ok:
        out += [f"{label}: {line}" for line in check.lines()]
    if res.record.snapshot["counters"]["unexpected"]:
        out.append(f"{label}: {res.record.snapshot['counters']['unexpected']} unexpected hops counted")
    return out


def _up(model) -> Topology:
    topology, created = realize.up(model.cni, model.mode)
    assert created
    return topology


def _path_roles(res: trace.TraceResult, direction: int) -> tuple[list[str], set[str]]:
    """Hop roles and the device roles of the points on one direction's expected path."""
    hops = _expected(res.record.snapshot, direction)
    points = {p["id"]: p for p in res.record.snapshot["points"]}
    devices = {points[h[k]]["role"] for h in hops for k in ("from", "to")}
    return [h["role"] for h in hops], devices


@pytest.mark.lab_destructive
@pytest.mark.parametrize("spec", SPECS)
def test_model_lab_follows_its_chain(spec: str, no_lab: None) -> None:
    reason = _missing_reason(spec)
    if reason:
        pytest.skip(reason)
    model = registry.parse(spec)
    topology = _up(model)
    problems: list[str] = []
    try:
        for path in model.paths:
            res = _run(spec, path, traffic="udp", count=N)
            assert res.record.traffic["received"] == N, (spec, path, res.record.traffic)
            problems += _problems(res, (0,), N)
            roles, devices = _path_roles(res, 0)
            if path == "cross-node":
                if model.mode == "vxlan":
                    assert any("vxlan encap" in r for r in roles) and any("vxlan decap" in r for r in roles), roles
                    assert "vxlan" in devices
                elif model.mode in ("host-gw", "bgp"):
                    assert not any("encap" in r or "decap" in r for r in roles), roles
                    assert not devices & TUNNEL_ROLES, devices
            if path == "pod-to-host":
                res = _run(spec, path, traffic="ping", count=PINGS)
                problems += _problems(res, (0, 1), PINGS)
        # every step of the default path's chain, rx included
        res = _run(spec, model.default_path, traffic="udp", count=N, events=FULL_EVENTS)
        problems += _problems(res, (0,), N)
        full = model.chain(model.default_path).steps
        assert len(_expected(res.record.snapshot, 0)) == len(full) - 1
    finally:
        cleanup.teardown()
    assert not problems, "\n".join(problems)
    assert cleanup.list_lab_namespaces() == [] and saved.load() is None
    assert not any(n in os.listdir("/run/netns") for n in topology.namespaces())


def test_model_without_a_path_is_refused_before_building() -> None:
    before = set(cleanup.list_lab_namespaces())
    with pytest.raises(UsageError, match="supports: same-node, pod-to-host"):
        trace.preflight(trace.TraceOptions(cni="bridge", path="cross-node"))
    with pytest.raises(UsageError, match="cannot reach their own node"):
        trace.preflight(trace.TraceOptions(cni="macvlan", path="pod-to-host"))
    opts = trace.TraceOptions(cni="bridge", path=None)
    trace.preflight(opts)
    assert opts.path == "same-node"
    assert set(cleanup.list_lab_namespaces()) == before


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cniprof", *args], check=False, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("argv", [("lab", "up", "--cni", "calico"), ("lab", "up", "--cni", "calico:ipip"),
                                  ("trace", "--cni", "calico", "--no-ui"),
                                  ("trace", "--cni", "calico:ipip", "--no-ui")])
def test_ipip_without_kernel_support_is_one_line(argv: tuple[str, ...]) -> None:
    if kernel.option("CONFIG_NET_IPIP") != "n":
        pytest.skip("this kernel has CONFIG_NET_IPIP (or its configuration is unreadable)")
    before = set(cleanup.list_lab_namespaces())
    p = _cli(*argv)
    assert p.returncode == 3, p.stderr
    assert p.stderr.strip().count("\n") == 0 and "Traceback" not in p.stderr
    assert "CONFIG_NET_IPIP" in p.stderr and "calico:ipip" in p.stderr
    assert set(cleanup.list_lab_namespaces()) == before


def test_explore_reads_the_chain_off_the_lab(lab) -> None:
    """`cniprof lab explore`'s engine on the flannel lab: the walked chain is the model's, step for step."""
    from cniprof.run.explore import explore

    a, b = trace.pick_pods(lab, "cross-node", None, None)
    (seen,) = explore(lab, a, b, traffic="udp", count=5)
    model = registry.parse("flannel:vxlan").chain("cross-node")
    strip = [(s.place, s.device, s.event) for s in model.steps if s.device != "socket"]
    assert [(s.place, s.device, s.event) for s in seen.chain] == strip
    assert {h.count for h in seen.hops} == {5}
