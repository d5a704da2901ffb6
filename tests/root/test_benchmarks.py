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
    """One untraced/traced pair of 1 s per cniprof tracer on iperf3: both runs moved data, the traced run went
    through `cniprof trace` (its summary.json's programs ran) and nothing is left running."""
    out = tmp_path / "overhead.json"
    p = _script("overhead.py", "--pairs", "1", "--duration", "1", "--tracers", "cniprof-full,cniprof-agents",
                "--loads", "iperf3", "--json", str(out))
    assert p.returncode == 0, p.stderr
    result = json.loads(out.read_text())
    assert [(x["tracer"], x["load"], x["pair"]) for x in result["pairs"]] == [
        ("cniprof-full", "iperf3", 0), ("cniprof-agents", "iperf3", 0)]
    assert all(x["untraced"] > 0 and x["traced"] > 0 for x in result["pairs"])
    full, agents = (x["info"] for x in result["pairs"])
    assert full["overhead"]["mode"] == "full" and full["overhead"]["events"] > 0  # not an idle probe
    assert agents["overhead"]["mode"] == "agents" and agents["attach_s"] > 0
    for tracer in ("cniprof-full", "cniprof-agents"):
        assert f"{tracer} iperf3 pair ratios: " in p.stdout
    assert not owned.settle(owned.stray_processes)


def test_nf_rule_cost_smallest_run(lab: Topology) -> None:
    p = _script("nf_rule_cost.py", "--pairs", "1", "--services", "10", "--count", "5")
    assert p.returncode == 0, p.stderr
    assert "pair 1: 0 services" in p.stdout and "median ratio over 1 pairs" in p.stdout
    assert kubeproxy.installed(lab) == ()  # its services are gone again
    for node in lab.nodes:
        assert kubeproxy.rule_count(node.netns) == 0
