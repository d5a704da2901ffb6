# SPDX-License-Identifier: Apache-2.0
"""Findings on the real lab: a clean trace reports no fault; offloads turned off on flannel.1 is the top finding."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.root

CNIPROF = [sys.executable, "-m", "cniprof"]


def _trace(out: Path) -> subprocess.CompletedProcess:
    p = subprocess.run([*CNIPROF, "trace", "--cni", "flannel", "--duration", "3", "--no-ui", "--export", str(out)],
                       capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0, p.stderr
    return p


def _ethtool(netns: str, *args: str) -> None:
    subprocess.run(["ip", "netns", "exec", netns, "ethtool", "-K", "flannel.1", *args], check=True,
                   capture_output=True)


def test_clean_trace_has_node_state_and_no_fault(lab, tmp_path: Path) -> None:
    p = _trace(tmp_path)
    assert "findings (top 3" in p.stdout
    state = json.loads((tmp_path / "nodestate.json").read_text())
    nodes = {ns["node"]: ns for ns in state["namespaces"] if ns["kind"] == "node"}
    vtep = next(d for d in nodes["node1"]["devices"] if d["name"] == "flannel.1")
    assert vtep["mtu"] == 1450 and vtep["features"]["tso"] is True and vtep["qdisc"]["kind"] == "noqueue"
    pod_a = next(ns for ns in state["namespaces"] if ns["pod"] == "pod-a")
    assert pod_a["snmp"]["TcpOutSegs"] > 1000  # the iperf3 client's segments, counted inside its namespace
    assert state["cpus"] and all(c["net_rx"] is not None for c in state["cpus"])
    doc = json.loads((tmp_path / "findings.json").read_text())
    assert doc["faults"] == 0, [f["title"] for f in doc["findings"] if f["severity"] == "fault"]
    assert "dominant_hop" in {f["kind"] for f in doc["findings"]}


def test_offloads_off_on_flannel_vtep_is_the_top_finding(lab, tmp_path: Path) -> None:
    nodes = [n.netns for n in lab.nodes]
    try:
        for ns in nodes:
            _ethtool(ns, "tx", "off", "gso", "off", "tso", "off")
        _trace(tmp_path)
    finally:
        for ns in nodes:
            _ethtool(ns, "tx", "on", "gso", "on", "tso", "on")
    top = json.loads((tmp_path / "findings.json").read_text())["findings"][0]
    assert (top["rank"], top["kind"], top["severity"]) == (1, "offloads_off", "fault")
    assert {e["where"] for e in top["evidence"] if e["value"] == "off"} == {"node1 flannel.1", "node2 flannel.1"}
    assert "offloads-on" in [a["tune"] for a in top["advice"]]
