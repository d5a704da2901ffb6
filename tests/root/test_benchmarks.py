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


def test_overhead_blocks_smallest_run(lab: Topology, tmp_path: Path) -> None:
    """One traced block of 2 s inside one real iperf3 connection: the intervals are labelled by the tracer's
    times (traced ones inside its window, untraced ones only where no tracer ran), the block has a ratio from
    both neighbours, and the traced run went through `cniprof trace`."""
    out = tmp_path / "blocks.json"
    p = _script("overhead.py", "--method", "blocks", "--pairs", "1", "--duration", "2", "--tracers", "cniprof",
                "--loads", "iperf3", "--json", str(out))
    assert p.returncode == 0, p.stderr
    assert "1 traced block x 2 s" in p.stdout and "cniprof iperf3 block ratios: " in p.stdout
    result = json.loads(out.read_text())
    (block,) = result["blocks"]
    assert block["ratio"] > 0 and block["info"]["overhead"]["events"] > 0
    assert all(n > 0 for n in block["counts"])  # intervals before, inside and after the window
    (run,) = result["runs"]
    (span,) = run["spans"]
    assert span["start"] < span["attached"] < span["window_end"] < span["exit"]
    for start, end, bps, label, _ in run["intervals"]:
        assert bps > 0
        if label == "traced":
            assert span["attached"] <= start and end <= span["window_end"]
        elif label == "untraced":
            assert end <= span["start"] or start >= span["exit"]
    assert not owned.settle(owned.stray_processes)


def test_nf_rule_cost_smallest_run(lab: Topology) -> None:
    p = _script("nf_rule_cost.py", "--pairs", "1", "--services", "10", "--count", "5")
    assert p.returncode == 0, p.stderr
    assert "pair 1: 0 services" in p.stdout and "median ratio over 1 pairs" in p.stdout
    assert kubeproxy.installed(lab) == ()  # its services are gone again
    for node in lab.nodes:
        assert kubeproxy.rule_count(node.netns) == 0
