# SPDX-License-Identifier: Apache-2.0
"""The path check must catch a wrong lab: break the flannel VXLAN lab on purpose and expect the mismatch.

The break: node1 routes node2's pod subnet straight over the underlay (a host-gw route) instead of through
flannel.1. Packets still arrive (node2 routes plain IP to cni0 as well), so every latency looks plausible; only
the comparison with the model's chain shows that the VXLAN hops were never taken.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cniprof.analysis import path_check
from cniprof.cni.topology import Topology
from cniprof.run import trace

pytestmark = pytest.mark.root

N = 23


def _ip(netns: str, *args: str) -> None:
    subprocess.run(["ip", "netns", "exec", netns, "ip", *args], check=True)


@pytest.fixture
def host_gw_route(lab: Topology) -> Iterator[Topology]:
    """node1: node2's /24 via node2's underlay address on eth0; flannel's onlink route restored afterwards."""
    node1 = lab.node("node1").netns
    subnet = "10.244.2.0/24"
    _ip(node1, "route", "replace", subnet, "via", lab.underlay_ips["node2"], "dev", "eth0")
    try:
        yield lab
    finally:
        _ip(node1, "route", "replace", subnet, "via", "10.244.2.0", "dev", "flannel.1", "onlink")


def test_unbroken_lab_passes(lab: Topology) -> None:
    res = trace.run(trace.TraceOptions(cni="flannel", traffic="udp", count=N, duration_s=3.0, interval_s=0.2,
                                       sample_every=1))
    check = path_check.check(res.record.snapshot)
    assert check.ok, check.lines()


def test_route_around_the_tunnel_is_reported(host_gw_route: Topology) -> None:
    res = trace.run(trace.TraceOptions(cni="flannel", traffic="udp", count=N, duration_s=3.0, interval_s=0.2,
                                       sample_every=1))
    assert res.record.traffic["received"] == N  # the packets get there: only the path is wrong
    check = path_check.check(res.record.snapshot)
    assert not check.ok
    fwd = check.directions[0]
    assert [h.role for h in fwd.missing] == ["ip forward", "vxlan encap", "vxlan decap", "ip forward"]
    skips = {(h.src, h.dst): h for h in fwd.unexpected}
    assert set(skips) == {("node1 cni0 receive", "node1 eth0 queue"), ("node2 eth0 receive", "node2 cni0 queue")}
    for h in skips.values():
        assert h.count == N and h.kind.startswith(path_check.SKIPS)
    assert "node1 flannel.1 queue" in skips[("node1 cni0 receive", "node1 eth0 queue")].kind
    assert not check.left_path  # nothing got lost: the packets rejoined the chain after each skip
    assert fwd.completed == N
    assert not check.directions[1].active  # UDP one way: the reverse direction is idle, not "missing"


def test_cli_prints_the_mismatch_and_exports_it(host_gw_route: Topology, tmp_path: Path) -> None:
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "-m", "cniprof", "trace", "--cni", "flannel", "--traffic", "udp",
                        "--count", str(N), "--sample", "1", "--no-ui", "--export", str(out)],
                       check=False, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "path check: MISMATCH" in p.stdout
    assert "missing hop" in p.stdout and "vxlan encap" in p.stdout
    assert "unexpected hop node1 cni0 receive → node1 eth0 queue: 23 packets" in p.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["path_check"]["ok"] is False
    fwd = summary["path_check"]["directions"][0]
    assert len(fwd["missing"]) == 4 and len(fwd["unexpected"]) == 2
