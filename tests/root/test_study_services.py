# SPDX-License-Identifier: Apache-2.0
"""Study features that install something beside the lab's devices, on the session's flannel/vxlan lab:

- a pod-to-service study with 50 dummy services in kube-proxy's iptables and nftables modes (and the CPU
  sampler): traffic reaches the pod through the ClusterIP, the rules are read back per node, and afterwards no
  kube-proxy rule or table is left in either node namespace, also when the study is interrupted;
- NOTRACK: conntrack in the node namespace sees the pod-to-pod connections without it and none with it;
- machine-wide sysctls (host_changes): set for the variant and restored afterwards, also from the state file a
  crashed study leaves; RFS's per-device rps_flow_cnt.
~40 s.
"""

from __future__ import annotations

import json
import subprocess

import pandas as pd
import pytest

from cniprof.cli.main import main
from cniprof.lab import host_sysctl, kubeproxy, kubeproxy_nft, tunings
from cniprof.netns_exec import run_in
from cniprof.study import runner, scenario
from cniprof.traffic.connect_rate import ConnectRate

pytestmark = [pytest.mark.root]

SERVICES = """\
version: 1
name: services-test
models: [flannel:vxlan]
paths: [pod-to-service]
repetitions: 1
duration_s: 1
cpu: true
generators:
  - {name: connect, tool: connect_rate}
variants:
  - {name: ipt-50, tunings: {services: 50}}
  - {name: nft-50, tunings: {services: {count: 50, mode: nftables}}}
"""


def _tables(lab) -> dict[str, str]:
    return {n.netns: subprocess.run(["ip", "netns", "exec", n.netns, "nft", "list", "tables"], capture_output=True,
                                    text=True, check=True).stdout for n in lab.nodes}


def _no_kube_proxy(lab) -> None:
    assert kubeproxy.installed(lab) == () and kubeproxy_nft.installed(lab) == ()
    for netns in (n.netns for n in lab.nodes):
        assert kubeproxy.rule_count(netns) == 0


def test_pod_to_service_study_both_modes(lab, tmp_path):
    tables = _tables(lab)
    (tmp_path / "s.yaml").write_text(SERVICES)
    out = tmp_path / "run"
    assert main(["run", str(tmp_path / "s.yaml"), "--output", str(out)]) == 0
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["status"] == "complete"
    modes = {}
    for run in meta["runs"]:
        svc = run["service"]
        assert run["dst_ip"] == svc["cluster_ip"] == "10.96.0.100" and svc["dummy_services"] == 50
        rules = run["kube_proxy_rules_per_node"]
        assert set(rules) == {n.netns for n in lab.nodes} and set(rules.values()) == {svc["rules_per_node"]}
        modes[run["variant"]] = svc["mode"]
        assert (out / "runs" / run["run_id"] / "cpu.folded").is_file()
    assert modes == {"ipt-50": "iptables", "nft-50": "nftables"}
    results = pd.read_csv(out / "results.csv")
    connects = results[results["metric"] == "connects_per_s"].set_index("variant")["value"]
    assert connects["ipt-50"] > 0 and connects["nft-50"] > 0, "connections reached the pod through the ClusterIP"
    hops = pd.read_csv(out / "hops.csv")
    assert hops[hops["in_e2e"] & hops["expected"]].groupby("variant")["packets"].sum().min() > 100
    cpu = pd.read_csv(out / "cpu.csv")
    assert set(cpu["kind"]) == {"component", "softirq"} and set(cpu["variant"]) == {"ipt-50", "nft-50"}
    _no_kube_proxy(lab)
    assert _tables(lab) == tables  # no nat/filter/kube-proxy table left behind


def test_interrupted_variant_removes_services(lab, tmp_path, monkeypatch):
    seen = {}

    def interrupt(run, topo, scen, archive, setup_s, setup=None, on_snapshot=None):
        seen["installed"] = kubeproxy_nft.installed(topo)
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "execute", interrupt)
    (tmp_path / "s.yaml").write_text(SERVICES.replace("  - {name: ipt-50, tunings: {services: 50}}\n", ""))
    with pytest.raises(KeyboardInterrupt):
        runner.run_scenario(scenario.load(tmp_path / "s.yaml"), tmp_path / "run", "text")
    assert len(seen["installed"]) == 2
    _no_kube_proxy(lab)


def _conntrack(netns: str) -> int:
    out = subprocess.run(["ip", "netns", "exec", netns, "cat", "/proc/sys/net/netfilter/nf_conntrack_count"],
                         capture_output=True, text=True, check=True).stdout
    return int(out)


def _connections(lab, notrack: bool) -> tuple[int, int]:
    """(conntrack entries added in node1 while ~1 s of connects ran, connects made)."""
    a, c = lab.pods[0], next(p for p in lab.pods if p.node != lab.pods[0].node)
    node1 = next(n.netns for n in lab.nodes if n.name == a.node)
    with tunings.applied(lab, {"notrack": notrack}):
        before = _conntrack(node1)
        gen = ConnectRate(a.netns, c.netns, c.ip, 1.0, port=5432)
        gen.start()
        made = gen.wait().connects
        return _conntrack(node1) - before, made


def test_notrack_keeps_pod_traffic_out_of_conntrack(lab):
    # kube-proxy's nat rules turn conntrack on in the node namespaces, as on a real node
    kubeproxy.apply(lab, services=0, port=5300)
    try:
        untracked, made = _connections(lab, notrack=True)  # first: entries of the tracked run live 2 min
        assert made > 50 and untracked <= 2
        tracked, made = _connections(lab, notrack=False)
        assert made > 50 and tracked > 50
    finally:
        kubeproxy.remove(lab)
    for n in lab.nodes:
        assert tunings.NOTRACK_TABLE not in _tables(lab)[n.netns]


BACKLOG = "net.core.netdev_max_backlog"


def test_host_sysctls_set_for_the_variant_and_restored(lab, tmp_path, monkeypatch):
    old = host_sysctl.read(BACKLOG)
    new = str(int(old) + 1)  # a change nobody else on the machine notices
    seen = {}

    def record(run, topo, scen, archive, setup_s, setup=None, on_snapshot=None):
        seen[run.variant.name] = (host_sysctl.read(BACKLOG), dict(setup.host_sysctls))

    monkeypatch.setattr(runner, "execute", record)
    text = SERVICES.replace("paths: [pod-to-service]", "paths: [cross-node]").replace("cpu: true", "host_changes: true")
    text = text.split("variants:")[0] + f"variants:\n  - {{name: backlog, tunings: {{sysctl: {{{BACKLOG}: {new}}}}}}}\n"
    (tmp_path / "s.yaml").write_text(text)
    runner.run_scenario(scenario.load(tmp_path / "s.yaml"), tmp_path / "run", text)
    assert seen["backlog"] == (new, {BACKLOG: old})
    assert host_sysctl.read(BACKLOG) == old and not host_sysctl.STATE_FILE.exists()


def test_crashed_study_sysctls_restored_from_state_file(tmp_path):
    old = host_sysctl.read(BACKLOG)
    state = tmp_path / "host.json"
    state.write_text(json.dumps({BACKLOG: old}))  # what applied() writes before it changes anything
    host_sysctl.write(BACKLOG, str(int(old) + 1))
    try:
        assert host_sysctl.restore_from_state(state) == {BACKLOG: old}
    finally:
        host_sysctl.write(BACKLOG, old)
    assert host_sysctl.read(BACKLOG) == old and not state.exists()


def test_rfs_flow_count_per_device(lab):
    dev = tunings.Dev(lab.pods[0].netns, "eth0", "pod_veth")
    path = "/sys/class/net/eth0/queues/rx-0/rps_flow_cnt"
    old = run_in(dev.netns, ["cat", path]).strip()
    with tunings.applied(lab, {"rfs": 4096}) as changes:  # per device only: the machine-wide table is host_sysctl's
        assert run_in(dev.netns, ["cat", path]).strip() == "4096"
        assert any("rps_flow_cnt" in c.what for c in changes)
    assert run_in(dev.netns, ["cat", path]).strip() == old
