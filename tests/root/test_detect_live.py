# SPDX-License-Identifier: Apache-2.0
"""Live node detection against real namespaces: a lab node plays the node (its devices and pods are real), a
temporary directory with real CNI configuration files plays its root filesystem. Then `trace --cni auto` traces
two detected pods for real, and `trace --cni A,B,...` runs a real comparison.

Tests that build their own lab are `lab_destructive` (after every test using the session flannel lab).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest

from cniprof.cni import registry
from cniprof.cni.topology import Topology
from cniprof.lab import cleanup, kernel, realize
from cniprof.node import detect

pytestmark = pytest.mark.root

CNIPROF = [sys.executable, "-m", "cniprof"]
N = 23
FLANNEL_CONFLIST = {
    "name": "cbr0", "cniVersion": "0.3.1",
    "plugins": [{"type": "flannel", "delegate": {"hairpinMode": True, "isDefaultGateway": True}},
                {"type": "portmap", "capabilities": {"portMappings": True}}],
}
CALICO_CONFLIST = {
    "name": "k8s-pod-network", "cniVersion": "0.3.1",
    "plugins": [{"type": "calico", "datastore_type": "kubernetes", "ipam": {"type": "calico-ipam"}},
                {"type": "portmap", "snat": True, "capabilities": {"portMappings": True}}],
}


def node_root(tmp_path: Path, conf_name: str | None = None, conf: dict | None = None,
              subnet_env: str | None = None) -> Path:
    root = tmp_path / "node-root"
    (root / "etc/cni/net.d").mkdir(parents=True)
    if conf_name:
        (root / "etc/cni/net.d" / conf_name).write_text(json.dumps(conf, indent=2))
    if subnet_env:
        (root / "run/flannel").mkdir(parents=True)
        (root / "run/flannel/subnet.env").write_text(subnet_env)
    return root


def flannel_root(tmp_path: Path) -> Path:
    env = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
    return node_root(tmp_path, "10-flannel.conflist", FLANNEL_CONFLIST, env)


def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([*CNIPROF, *args], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture
def own_lab(no_lab: None) -> Iterator[Callable[[str], Topology]]:
    """Build a lab of the given model for one test; removed afterwards whatever happens."""
    def build(spec: str) -> Topology:
        model = registry.parse(spec)
        topo, _ = realize.up(model.cni, model.mode)
        return topo
    yield build
    cleanup.teardown()


def assert_pods_mapped(found: Topology, lab: Topology, node: str) -> None:
    """Every pod of the lab node, with its namespace, address, host veth and eth0 ifindex, and nothing else."""
    want = [p for p in lab.pods if p.node == node]
    assert [p.name for p in found.pods] == [p.name for p in want]
    for got, exp in zip(found.pods, want):
        assert (got.netns, got.ip, got.host_veth) == (exp.netns, exp.ip, exp.host_veth)
        assert [(d.name, d.role, d.ifindex) for d in got.devices] == [(d.name, d.role, d.ifindex) for d in exp.devices]
    lab_devices = {(d.name, d.role, d.ifindex) for d in lab.node(node).devices}
    assert {(d.name, d.role, d.ifindex) for d in found.nodes[0].devices} == lab_devices


def test_flannel_node_detected_and_veths_mapped_to_pods(lab: Topology, tmp_path: Path) -> None:
    node = lab.node("node1")
    root = flannel_root(tmp_path)
    d = detect.detect(root=root, netns=node.netns)
    assert (d.cni, d.mode, d.confidence) == ("flannel", "vxlan", "high")
    assert d.evidence[0] == "etc/cni/net.d/10-flannel.conflist: plugin type flannel"
    topo, problems = detect.node_topology(d, node.netns)
    assert problems == []
    assert (topo.cni, topo.mode) == ("flannel", "vxlan")
    assert [p.host_veth for p in topo.pods] == ["veth-pod-a", "veth-pod-b"]
    assert_pods_mapped(topo, lab, "node1")
    assert topo.underlay_ips == {node.netns: lab.underlay_ips["node1"]}


def test_trace_auto_traces_two_detected_pods(lab: Topology, tmp_path: Path) -> None:
    root, out = flannel_root(tmp_path), tmp_path / "run"
    p = cli("trace", "--cni", "auto", "--node-netns", lab.node("node1").netns, "--root", str(root),
            "--traffic", "udp", "--count", str(N), "--no-ui", "--export", str(out))
    assert p.returncode == 0, p.stderr
    assert "live node" in p.stdout and "detected flannel:vxlan" in p.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["cni"], summary["mode"]) == ("flannel", "vxlan")
    assert summary["end_to_end"]["direction"] == "pod-a→pod-b"  # one detected node: same-node by default
    assert summary["end_to_end"]["packets"] == N
    assert summary["path_check"]["ok"] is True
    hops = pd.read_csv(out / "hops.csv")
    fwd = hops[(hops["direction"] == "pod-a→pod-b") & hops["expected"] & hops["in_e2e"]]
    assert list(fwd["role"]) == ["pod veth xmit + host veth backlog", "bridge forward", "host veth xmit + pod backlog"]
    assert list(fwd["packets"]) == [N, N, N]
    assert not (~hops["expected"] & (hops["packets"] > 0)).any()


def test_trace_auto_cross_node_on_one_detected_node_is_one_line(lab: Topology, tmp_path: Path) -> None:
    p = cli("trace", "--cni", "auto", "--node-netns", lab.node("node1").netns, "--root", str(flannel_root(tmp_path)),
            "--path", "cross-node", "--traffic", "udp", "--count", "3", "--no-ui")
    assert p.returncode == 2
    assert p.stderr.startswith("cniprof: no such pod pair for cross-node") and p.stderr.count("\n") == 1


def test_doctor_reports_the_detection() -> None:
    p = cli("doctor", "--json", timeout=120)
    data = json.loads(p.stdout)
    assert set(data["cni_detection"]) == {"cni", "mode", "confidence", "evidence"}
    assert any("root namespace" in e for e in data["cni_detection"]["evidence"])
    p = cli("doctor", timeout=120)
    assert "node CNI (trace --cni auto): " in p.stdout


@pytest.mark.lab_destructive
def test_calico_bgp_node_detected(own_lab, tmp_path: Path) -> None:
    lab = own_lab("calico:bgp")
    node = lab.node("node2")
    d = detect.detect(root=node_root(tmp_path, "10-calico.conflist", CALICO_CONFLIST), netns=node.netns)
    assert (d.cni, d.mode, d.confidence) == ("calico", "bgp", "high")
    topo, problems = detect.node_topology(d, node.netns)
    assert problems == []
    assert all(p.host_veth.startswith("cali") for p in topo.pods)
    assert_pods_mapped(topo, lab, "node2")


@pytest.mark.lab_destructive
def test_macvlan_pods_found_from_their_namespaces(own_lab, tmp_path: Path) -> None:
    lab = own_lab("macvlan")
    node = lab.node("node1")
    conf = {"cniVersion": "0.3.1", "name": "macvlannet", "type": "macvlan", "master": "eth0", "mode": "bridge"}
    d = detect.detect(root=node_root(tmp_path, "10-macvlan.conf", conf), netns=node.netns)
    assert d.spec == "macvlan:bridge"
    topo, _ = detect.node_topology(d, node.netns)
    assert_pods_mapped(topo, lab, "node1")


@pytest.mark.lab_destructive
def test_no_cni_on_a_host_network_node(own_lab, tmp_path: Path) -> None:
    lab = own_lab("host")
    node, root = lab.node("node1"), node_root(tmp_path)
    d = detect.detect(root=root, netns=node.netns)
    assert d.cni is None and d.mode is None
    p = cli("trace", "--cni", "auto", "--node-netns", node.netns, "--root", str(root), "--traffic", "udp", "--no-ui")
    assert p.returncode == 1
    assert p.stderr == f"cniprof: {detect.not_found_message(root, node.netns)}\n"
    assert "etc/cni/net.d/*.conf|*.conflist|*.json" in p.stderr and "flannel.1, cni0, cali*" in p.stderr


@pytest.mark.lab_destructive
def test_comparison_run(no_lab, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    p = cli("trace", "--cni", "flannel,calico:ipip,bridge,host", "--path", "cross-node", "--traffic", "udp",
            "--count", str(N), "--no-ui", "--export", str(out), timeout=300)
    assert p.returncode == 0, p.stderr
    ipip_missing = bool(kernel.missing(registry.parse("calico:ipip").requires))
    traced = ["flannel:vxlan", "host:network"] + ([] if ipip_missing else ["calico:ipip"])
    df = pd.read_csv(out / "compare.csv")
    for spec in traced:
        rows = df[(df["model"] == spec) & (df["status"] == "traced")].set_index("metric")
        assert rows.loc["packets", "value"] == N, spec
    host = df[(df["model"] == "host:network") & (df["metric"] == "mean")].iloc[0]
    assert host["pct_of_host"] == pytest.approx(100.0)
    skipped = df[df["status"] == "skipped"].set_index("model")["note"]
    assert "no cross-node path" in skipped["bridge:bridge"]
    if ipip_missing:
        assert "CONFIG_NET_IPIP" in skipped["calico:ipip"]
        assert "skipped calico:ipip" in p.stdout
    assert {d.name for d in out.iterdir() if d.is_dir()} == {"flannel-vxlan", "host-network", "report"} | (
        set() if ipip_missing else {"calico-ipip"})
    # the export ends with the comparison's report, which names report.html
    assert f"report: {out / 'report' / 'report.html'} (" in p.stdout
    md = (out / "report" / "report.md").read_text()
    packets = next(line for line in md.splitlines() if line.startswith("| packets |"))
    assert packets.split("|")[2:-1] == [f" {N} "] * len(traced)
    assert json.loads((out / "flannel-vxlan" / "summary.json").read_text())["end_to_end"]["packets"] == N
    assert cleanup.list_lab_namespaces() == []


@pytest.mark.lab_destructive
@pytest.mark.parametrize("spec", ["cilium:vxlan", "cilium:native"])
def test_cilium_node_detected(own_lab, tmp_path: Path, spec: str) -> None:
    lab = own_lab(spec)
    node = lab.node("node1")
    conf = {"cniVersion": "0.3.1", "name": "cilium", "plugins": [{"type": "cilium-cni"}]}
    d = detect.detect(root=node_root(tmp_path, "05-cilium.conflist", conf), netns=node.netns)
    assert (d.spec, d.confidence) == (spec, "high")
    topo, problems = detect.node_topology(d, node.netns)
    assert problems == []
    assert all(p.host_veth.startswith("lxc") for p in topo.pods)  # cilium_host/cilium_net are not pods
    assert_pods_mapped(topo, lab, "node1")
