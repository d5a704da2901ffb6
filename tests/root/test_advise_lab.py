# SPDX-License-Identifier: Apache-2.0
"""Findings on the real lab: a clean trace reports no fault, and each problem `lab inject` puts into a lab is the
top finding of a live trace of it, with the tune that fixes it (the thresholds were calibrated on recorded runs in
tests/unit/data/advise/; this checks them against the kernel as it is today).

offloads-off is switched on the session's lab (and back); the other injections run on a lab of their own, under a
lab id derived from the session's (CNIPROF_LAB_ID=<id>adv), built and removed by the test, so the session's lab
is never changed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import owned
import pytest

from cniprof.cni.topology import NETNS_DIR

pytestmark = pytest.mark.root

CNIPROF = [sys.executable, "-m", "cniprof"]
INJECTED_LAB_ID = f"{owned.LAB_ID}adv"


def _cli(*args: str, lab_id: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, **({"CNIPROF_LAB_ID": lab_id} if lab_id else {})}
    p = subprocess.run([*CNIPROF, *args], capture_output=True, text=True, timeout=timeout, check=False, env=env)
    assert p.returncode == 0, f"cniprof {' '.join(args)}: {p.stderr}"
    return p


def _trace(out: Path, *args: str, lab_id: str | None = None) -> subprocess.CompletedProcess:
    return _cli("trace", "--cni", "flannel", "--no-ui", "--export", str(out), *args, lab_id=lab_id)


def _findings(run: Path) -> list[dict]:
    _cli("advise", str(run))
    return json.loads((run / "findings.json").read_text())["findings"]


def _ethtool(netns: str, *args: str) -> None:
    subprocess.run(["ip", "netns", "exec", netns, "ethtool", "-K", "flannel.1", *args], check=True,
                   capture_output=True)


@contextmanager
def injected(*names: str) -> Iterator[None]:
    """A flannel lab of the test's own lab id with the problems injected; removed afterwards."""
    try:
        _cli("lab", "up", "--cni", "flannel", *(a for n in names for a in ("--inject", n)), lab_id=INJECTED_LAB_ID,
             timeout=900)
        yield
    finally:
        subprocess.run([*CNIPROF, "lab", "down"], capture_output=True, text=True, timeout=300, check=False,
                       env={**os.environ, "CNIPROF_LAB_ID": INJECTED_LAB_ID})
    left = [n for n in os.listdir(NETNS_DIR) if n.startswith(f"cniprof_{INJECTED_LAB_ID}-")]
    assert not left, f"the injected lab was not removed: {left}"


def _top_fault(findings: list[dict], kind: str, tune: str) -> dict:
    """The injected problem is the first finding and the only fault, and its advice names the tune for it.

    Besides it, a `drops` fault may stand: a saturating TCP stream on a busy 2-CPU machine can lose packets for
    real (a full backlog), which the kernel counted and advise must report; it must rank below the injection."""
    top = findings[0]
    assert (top["rank"], top["kind"], top["severity"]) == (1, kind, "fault"), [(f["kind"], f["severity"],
                                                                                 f["title"]) for f in findings]
    assert [f["kind"] for f in findings if f["severity"] == "fault" and f["kind"] != "drops"] == [kind]
    assert tune in [a.get("tune") for a in top["advice"]]
    return top


def test_clean_trace_has_node_state_and_no_fault(lab, tmp_path: Path) -> None:
    p = _trace(tmp_path, "--duration", "3")
    assert "findings (top 3" in p.stdout
    state = json.loads((tmp_path / "nodestate.json").read_text())
    nodes = {ns["node"]: ns for ns in state["namespaces"] if ns["kind"] == "node"}
    vtep = next(d for d in nodes["node1"]["devices"] if d["name"] == "flannel.1")
    assert vtep["mtu"] == 1450 and vtep["features"]["tso"] is True and vtep["qdisc"]["kind"] == "noqueue"
    pod_a = next(ns for ns in state["namespaces"] if ns["pod"] == "pod-a")
    assert pod_a["snmp"]["TcpOutSegs"] > 0  # the iperf3 client's segments, counted inside its namespace
    assert state["cpus"] and all(c["net_rx"] is not None for c in state["cpus"])
    doc = json.loads((tmp_path / "findings.json").read_text())
    assert doc["faults"] == 0, [f["title"] for f in doc["findings"] if f["severity"] == "fault"]
    assert "dominant_hop" in {f["kind"] for f in doc["findings"]}


def test_offloads_off_on_flannel_vtep_is_the_top_finding(lab, tmp_path: Path) -> None:
    nodes = [n.netns for n in lab.nodes]
    try:
        for ns in nodes:
            _ethtool(ns, "tx", "off", "gso", "off", "tso", "off")
        _trace(tmp_path, "--duration", "3")
    finally:
        for ns in nodes:
            _ethtool(ns, "tx", "on", "gso", "on", "tso", "on")
    top = _top_fault(json.loads((tmp_path / "findings.json").read_text())["findings"], "offloads_off", "offloads-on")
    assert {e["where"] for e in top["evidence"] if e["value"] == "off"} == {"node1 flannel.1", "node2 flannel.1"}


def test_mtu_mismatch_is_the_top_finding(tmp_path: Path) -> None:
    """Underlay MTU lowered to the overlay's (1450): every full-size VXLAN packet is fragmented on node1's
    underlay and reassembled on node2."""
    with injected("mtu-mismatch"):
        _trace(tmp_path, "--duration", "3", lab_id=INJECTED_LAB_ID)
    top = _top_fault(_findings(tmp_path), "mtu_mismatch", "mtu-match")
    evidence = {(e["where"], e["metric"]): e["value"] for e in top["evidence"]}
    config = {w: v for (w, m), v in evidence.items() if m == "pod veth mtu + 50 B encap"}
    assert set(config.values()) == {1500} and len(config) == 4, config  # each host veth: 1450 + 50 > 1450
    assert evidence[("node1", "IpFragCreates")] > 0 and evidence[("node2", "IpReasmReqds")] > 0


def test_softirq_on_one_cpu_is_the_top_finding(tmp_path: Path) -> None:
    """RPS off and both iperf3 ends pinned to CPU 0: the lab's NET softirq and its CPU time stay on CPU 0."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU: there is no other CPU to leave idle")
    with injected("softirq-one-cpu"):
        _trace(tmp_path, "--cpu", "--duration", "3", lab_id=INJECTED_LAB_ID)
    top = _top_fault(_findings(tmp_path), "softirq_imbalance", "unpin-generators")
    pinned = [e for e in top["evidence"] if e["metric"] == "CPUs allowed (pinned)"]
    assert pinned and pinned[0]["value"] == "0" and "iperf3" in pinned[0]["where"]


def test_kube_proxy_services_are_the_top_finding(tmp_path: Path) -> None:
    """5000 dummy services (over 25 000 iptables rules per node) and every datagram a new connection to the ClusterIP:
    each walks KUBE-SERVICES, and netfilter takes most of the path's time."""
    with injected("services=5000"):
        _trace(tmp_path, "--path", "pod-to-service", "--traffic", "udp", "--count", "1000", "--nf",
               lab_id=INJECTED_LAB_ID)
    top = _top_fault(_findings(tmp_path), "netfilter_cost", "kube-proxy-nftables")
    evidence = {(e["where"], e["metric"]): e["value"] for e in top["evidence"]}
    assert evidence[("node1 PREROUTING", "mean_us")] > 0
    kube = [int(v.rsplit("(", 1)[1].rstrip(")")) for (w, m), v in evidence.items() if m == "iptables rules (KUBE-*)"]
    assert len(kube) == 2 and min(kube) >= 5 * 5000, kube  # per node: at least 5 rules per dummy service
