# SPDX-License-Identifier: Apache-2.0
"""The benchmark scripts run at all: the smallest run of each on the session's lab (reused and left up). What
they measure is theirs to report; here only that they measure something real and clean up after themselves."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import owned
import pytest

from cniprof.cni.topology import Topology
from cniprof.lab import kubeproxy

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[2]


def _script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *args], capture_output=True, text=True,
                          timeout=300, check=False, cwd=ROOT)


def test_overhead_smallest_run(lab: Topology, tmp_path: Path) -> None:
    """One untraced/traced pair of 1 s without bpf stats (kernel.bpf_stats_enabled is machine-wide)."""
    out = tmp_path / "overhead.json"
    p = _script("overhead.py", "--pairs", "1", "--duration", "1", "--warmup", "0", "--no-stats", "--json", str(out))
    assert p.returncode == 0, p.stderr
    assert "ratio" in p.stdout
    result = json.loads(out.read_text())
    assert result["lab_created"] is False  # the session's lab was reused ...
    assert [(r["pair"], r["traced"]) for r in result["runs"]] == [(0, False), (0, True)]
    assert all(r["throughput_bps"] > 0 for r in result["runs"])
    traced = result["runs"][1]
    assert traced["hops_expected"] > 0 and traced["hops_with_packets"] == traced["hops_expected"]  # not idle
    assert not owned.settle(owned.stray_processes)


def test_nf_rule_cost_smallest_run(lab: Topology) -> None:
    p = _script("nf_rule_cost.py", "--pairs", "1", "--services", "10", "--count", "5")
    assert p.returncode == 0, p.stderr
    assert "pair 1: 0 services" in p.stdout and "median ratio over 1 pairs" in p.stdout
    assert kubeproxy.installed(lab) == ()  # its services are gone again
    for node in lab.nodes:
        assert kubeproxy.rule_count(node.netns) == 0
