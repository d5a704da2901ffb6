# SPDX-License-Identifier: Apache-2.0
"""`cniprof trace --path pod-to-service --nf` as a user runs it, on the (reused) flannel lab.

pod-a sends 23 UDP datagrams to a kube-proxy ClusterIP in front of pod-c, each from its own socket. The hop
probe must track all of them along the cross-node chain (its start-point filter is pod-a -> ClusterIP: DNAT only
happens later, in node1's PREROUTING), the netfilter probe must see them in node1's PREROUTING, the probe types
the trace used must be the ones `cniprof doctor --json` chose (as the kernel matrix checks in every guest), and
afterwards the lab must hold no kube-proxy rule, no nftables table and no link of this run, also after Ctrl-C.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import netpair
import owned
import pandas as pd
import pytest

from cniprof.analysis.summary import probe_types
from cniprof.cni.topology import Topology
from cniprof.lab import kubeproxy
from cniprof.probes import nfhooks_abi as nf_abi

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(shutil.which("bpftool") is None, reason="bpftool not installed"),
    pytest.mark.skipif(shutil.which("iptables-restore") is None, reason="iptables not installed"),
]

CNIPROF = [sys.executable, "-m", "cniprof"]
COUNT = 23
NF_PROGRAMS = tuple(n[:15] for n in nf_abi.PROGRAMS)  # the kernel keeps 15 characters of a program name


def links_left(before: set[int], timeout_s: float = 5.0) -> set[int]:
    """Links held by this session's processes that appeared since `before` and are still held after `timeout_s`."""
    return owned.settle(lambda: owned.held_links() - before, timeout_s)


def netns_exec(netns: str, *argv: str) -> str:
    return subprocess.run(["ip", "netns", "exec", netns, *argv], check=True, capture_output=True, text=True,
                          timeout=60).stdout


def nft_tables(netns: str) -> str:
    return netns_exec(netns, "nft", "list", "tables") if shutil.which("nft") else ""


def kube_chains(lab: Topology) -> dict[str, int]:
    return {n.netns: netns_exec(n.netns, "iptables-save").count(":KUBE-") for n in lab.nodes}


@pytest.fixture
def clean_lab(lab: Topology) -> Iterator[Topology]:
    """The session lab without kube-proxy rules; afterwards exactly the nftables tables it had before."""
    assert not any(kube_chains(lab).values()), "the lab holds kube-proxy rules before the test"
    tables = {n.netns: nft_tables(n.netns) for n in lab.nodes}
    yield lab
    assert not any(kube_chains(lab).values()), "kube-proxy rules left in the lab"
    assert {n.netns: nft_tables(n.netns) for n in lab.nodes} == tables, "nftables tables left in the lab"


def test_pod_to_service_udp_with_nf(clean_lab: Topology, tmp_path: Path) -> None:
    """Also: `doctor --json`'s choices are exactly the probe types this trace (with every feature on) used."""
    doctor = subprocess.run([*CNIPROF, "doctor", "--json"], capture_output=True, text=True, timeout=60, check=True)
    choices = json.loads(doctor.stdout)["choices"]
    out = tmp_path / "run"
    before = owned.held_links()
    p = subprocess.run([*CNIPROF, "trace", "--path", "pod-to-service", "--services", "0", "--traffic", "udp",
                        "--count", str(COUNT), "--nf", "--cpu", "--no-ui", "--export", str(out)],
                       capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode == 0, p.stderr
    assert probe_types(json.loads((out / "summary.json").read_text())) == choices
    assert "netfilter cost per hook" in p.stdout and "10.96.0.100" in p.stdout
    assert "lab reused, left up" in p.stdout

    for name in ("hops.csv", "summary.json", "snapshot.json", "nf.csv", "nf.json"):
        assert (out / name).is_file(), name
    hops = pd.read_csv(out / "hops.csv")
    fwd = hops[(hops["direction"] == "pod-a→pod-c") & hops["expected"] & hops["in_e2e"]]
    assert len(fwd) == 9 and (fwd["packets"] == COUNT).all(), fwd[["hop", "packets"]]

    nf = pd.read_csv(out / "nf.csv")
    pre = nf[(nf["node"] == "node1") & (nf["hook"] == "PREROUTING")]
    assert len(pre) == 1 and int(pre["packets"].iloc[0]) == COUNT and int(pre["unclosed"].iloc[0]) == 0
    assert pre["mean_us"].iloc[0] > 0

    summary = json.loads((out / "summary.json").read_text())
    block = summary["netfilter"]
    assert block["attach"] == "netfilter_link" and "10.96.0.100" in block["addresses"]
    row = next(h for h in block["hooks"] if (h["node"], h["hook"]) == ("node1", "PREROUTING"))
    assert row["packets"] == COUNT
    assert summary["service"]["cluster_ip"] == "10.96.0.100" and summary["service"]["dummy_services"] == 0
    snap = json.loads((out / "snapshot.json").read_text())
    assert snap["directions"][0]["dst_ip"] == "10.96.0.100"  # the start-point filter: before DNAT
    assert snap["directions"][1]["src_ip"] == clean_lab.pod("pod-c").ip  # replies leave pod-c as themselves

    assert not links_left(before), "probe links left after the run"


def test_ctrl_c_removes_the_service_and_links(clean_lab: Topology) -> None:
    before = owned.held_links()
    with netpair.sigint_not_ignored():
        proc = subprocess.Popen([*CNIPROF, "trace", "--path", "pod-to-service", "--traffic", "udp", "--count",
                                 "3000", "--nf", "--no-ui"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        owned.wait_for(lambda: proc.poll() is not None or (kube_chains(clean_lab)[clean_lab.nodes[0].netns]
                                                           and owned.held_links(NF_PROGRAMS) - before),
                       "the run's kube-proxy rules and netfilter links")
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert not links_left(before), "probe links left after Ctrl-C"


def test_rules_it_did_not_add_are_left_alone(clean_lab: Topology) -> None:
    """A reused lab that already holds kube-proxy rules: one line, and the rules are still there afterwards."""
    kubeproxy.apply(clean_lab, services=3, target_pod="pod-c", port=5300)
    try:
        counts = kube_chains(clean_lab)
        p = subprocess.run([*CNIPROF, "trace", "--path", "pod-to-service", "--traffic", "udp", "--count", "5",
                            "--no-ui"], capture_output=True, text=True, timeout=60, check=False)
        assert p.returncode == 2, p.stderr
        assert p.stderr.count("\n") == 1 and "already holds kube-proxy rules" in p.stderr
        assert kube_chains(clean_lab) == counts
    finally:
        kubeproxy.remove(clean_lab)


@pytest.mark.parametrize("args, message", [
    (["--path", "cross-node", "--services", "5"], "--services adds kube-proxy services for --path pod-to-service"),
    (["--path", "pod-to-service", "--traffic", "ping"], "kube-proxy does not forward ping"),
    (["--path", "pod-to-service", "--traffic", "udp", "--count", "5000"], "--count at most 4096"),
])
def test_bad_service_options_are_one_line(args: list[str], message: str) -> None:
    p = subprocess.run([*CNIPROF, "trace", "--no-ui", *args], capture_output=True, text=True, timeout=60,
                       check=False)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and message in p.stderr, p.stderr


def test_refused_netfilter_links_stop_before_the_lab(monkeypatch: pytest.MonkeyPatch) -> None:
    """--nf on a kernel that refuses netfilter links: one line, and neither lab nor rules are touched."""
    from cniprof.bpf import features
    from cniprof.errors import EnvironmentProblem
    from cniprof.run import trace

    refused = ("netfilter_link", "fentry", "kprobe")  # fentry would be the fallback: refuse it too
    results = {name: (name not in refused, f"{name} says so") for name in features.NAMES}
    monkeypatch.setattr(trace, "_features", lambda: features.build("6.18", "x86_64", "v1.1", results))
    touched = []
    monkeypatch.setattr(trace.realize, "up", lambda *a, **k: touched.append(a))
    monkeypatch.setattr(trace.pod_to_service, "install", lambda *a, **k: touched.append(a))
    opts = trace.TraceOptions(path="pod-to-service", traffic="udp", count=5, nf=True)
    with pytest.raises(EnvironmentProblem) as e:
        trace.run(opts)
    assert "\n" not in str(e.value) and "refuses BPF netfilter links" in str(e.value)
    assert touched == []


def test_tables_the_lab_had_are_kept(clean_lab: Topology) -> None:
    """An empty iptables-nft filter table left by earlier work (iptables -I, then -D) is not this run's: it is
    there afterwards exactly as before, although the kube-proxy removal drops the tables it finds empty."""
    if shutil.which("nft") is None:
        pytest.skip("nft not installed")
    node2 = clean_lab.node("node2").netns
    rule = ["FORWARD", "-s", "192.0.2.1", "-j", "DROP"]
    had_filter = "table ip filter" in nft_tables(node2)
    netns_exec(node2, "iptables", "-w", "-I", *rule)
    netns_exec(node2, "iptables", "-w", "-D", *rule)
    before = netns_exec(node2, "nft", "list", "table", "ip", "filter")
    try:
        p = subprocess.run([*CNIPROF, "trace", "--path", "pod-to-service", "--traffic", "udp", "--count", "5",
                            "--no-ui"], capture_output=True, text=True, timeout=60, check=False)
        assert p.returncode == 0, p.stderr
        assert netns_exec(node2, "nft", "list", "table", "ip", "filter") == before
    finally:
        if not had_filter:
            netns_exec(node2, "nft", "delete", "table", "ip", "filter")
