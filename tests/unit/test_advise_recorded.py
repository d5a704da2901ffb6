# SPDX-License-Identifier: Apache-2.0
"""Findings on recorded real lab runs (tests/unit/data/advise/, `trace --cpu --nf --export` trimmed to the files
the rules read): each injected problem is the top finding, and a clean run reports no fault at all."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cniprof.advise import render
from cniprof.advise.advice import TUNE_NAMES
from cniprof.advise.engine import advise
from cniprof.advise.finding import FAULT, OBSERVATION
from cniprof.cli.main import main
from cniprof.errors import UsageError

DATA = Path(__file__).parent / "data" / "advise"

INJECTED = {
    "flannel_offloads_off": ("offloads_off", "tune offloads-on"),  # ethtool -K flannel.1 tx off gso off tso off
    "flannel_services10000": ("netfilter_cost", "tune kube-proxy-nftables"),  # --services 10000, udp 4000
    "flannel_pinned_cpu0": ("softirq_imbalance", "tune unpin-generators"),  # taskset -c 0 iperf3 client+server
    "flannel_underlay_mtu1400": ("mtu_mismatch", "tune mtu-match"),  # node eth0 1400, flannel.1 + pods 1450
}


@pytest.mark.parametrize("run", sorted(INJECTED))
def test_injected_problem_is_the_top_finding(run):
    kind, tune = INJECTED[run]
    _, found = advise(DATA / run)
    top = found[0]
    assert (top.rank, top.kind, top.severity) == (1, kind, FAULT)
    assert [f.kind for f in found if f.severity == FAULT] == [kind]  # the one injected problem, nothing invented
    assert tune.split()[1] in [a["tune"] for a in top.advice]
    assert all(a["risk"] and a["how"] for a in top.advice)


def test_top_findings_carry_the_numbers():
    ev = {r: {(e.where, e.metric): e.value for e in advise(DATA / r)[1][0].evidence} for r in INJECTED}
    assert ev["flannel_offloads_off"][("node1 flannel.1", "gso/tso/tx-checksum")] == "off"
    assert ev["flannel_underlay_mtu1400"][("node1", "IpFragCreates")] > 1_000_000
    assert ev["flannel_underlay_mtu1400"][("node2", "IpReasmReqds")] > 1_000_000
    assert ev["flannel_services10000"][("node1 PREROUTING", "mean_us")] > 50  # clean: 0.08 µs
    assert ev["flannel_services10000"][("each node", "kube-proxy rules (lab service)")] == 50017
    assert ev["flannel_pinned_cpu0"][("pod-a iperf3, pod-c iperf3", "CPUs allowed (pinned)")] == "0"


@pytest.mark.parametrize("run", ["flannel_clean", "calico_bgp_clean", "cilium_clean"])
def test_clean_run_reports_no_fault(run):
    _, found = advise(DATA / run)
    assert found and all(f.severity == OBSERVATION for f in found)
    assert "dominant_hop" in {f.kind for f in found}
    ranks = [f.share for f in found]
    assert ranks == sorted(ranks, reverse=True)


def test_tunnel_overhead_only_on_tunnel_models():
    kinds = {r: {f.kind for f in advise(DATA / r)[1]} for r in ("flannel_clean", "cilium_clean", "calico_bgp_clean")}
    assert "tunnel_overhead" in kinds["flannel_clean"] and "tunnel_overhead" in kinds["cilium_clean"]
    assert "tunnel_overhead" not in kinds["calico_bgp_clean"]


def test_every_advice_tune_name_is_one_tune_accepts():
    for run in INJECTED:
        for f in advise(DATA / run)[1]:
            assert {a["tune"] for a in f.advice} - {None} <= set(TUNE_NAMES)


def test_study_groups_and_no_tunnel_comparison(tmp_path):
    """A study dir with a flannel:vxlan and a calico:bgp group: findings per group, tunnel vs no tunnel."""
    runs = [("001-flannel", "flannel:vxlan", "flannel_clean"), ("002-calico", "calico:bgp", "calico_bgp_clean")]
    for run_id, _, src in runs:
        shutil.copytree(DATA / src, tmp_path / "runs" / run_id)
    meta = {"scenario": {"name": "t"}, "runs": [{"run_id": r, "model": m, "path": "cross-node", "variant": "base",
                                                  "tool": "iperf3"} for r, m, _ in runs]}
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    kind, found = advise(tmp_path)
    assert kind == "study" and all(f.severity == OBSERVATION for f in found)
    tun = next(f for f in found if f.kind == "tunnel_overhead")
    assert tun.group == {"model": "flannel:vxlan", "path": "cross-node", "variant": "base", "runs": "1/1"}
    assert any("vs calico:bgp" in e.where for e in tun.evidence)
    assert {f.group["model"] for f in found} == {"flannel:vxlan", "calico:bgp"}


def test_cli_writes_findings_and_json(tmp_path, capsys):
    assert main(["advise", str(DATA / "flannel_offloads_off"), "--json", "--output", str(tmp_path)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["faults"] == 1 and doc["findings"][0]["kind"] == "offloads_off"
    assert json.loads((tmp_path / render.FINDINGS_JSON).read_text()) == doc
    assert (tmp_path / render.FINDINGS_CSV).read_text().splitlines()[1].startswith("1,,,,,fault,")
    assert main(["advise", str(DATA / "flannel_clean"), "--output", str(tmp_path)]) == 0
    assert "dominant hop" in capsys.readouterr().out


def test_not_a_run_dir_is_one_line(tmp_path, capsys):
    assert main(["advise", str(tmp_path)]) == UsageError.exit_code
    assert "not a cniprof run directory" in capsys.readouterr().err


# problems put in by hand on the flannel lab (iperf3, `trace --cpu --export`, trimmed to the files the rules read)
BY_HAND = {
    # iptables -I FORWARD -m statistic --mode random --probability 0.02 -j DROP in node2
    "flannel_forward_drop2pct": ("drops", {"drops", "tcp_retransmits"}, "NETFILTER_DROP"),
    # tc qdisc add dev eth0 root tbf rate 500mbit burst 64kb latency 100ms in node1
    "flannel_tbf500mbit": ("qdisc_queueing", {"qdisc_queueing"}, "tbf"),
    # issue 17: a tc program drops every 4th of 400 UDP datagrams at node1 flannel.1's egress (tests/root/dropper.py)
    "flannel_tc_egress_drop25pct": ("drops", {"drops"}, "TC_EGRESS 100"),
}


@pytest.mark.parametrize("run", sorted(BY_HAND))
def test_drops_and_qdisc_queueing_rank_first_with_their_evidence(run):
    kind, faults, evidence = BY_HAND[run]
    _, found = advise(DATA / run)
    assert (found[0].kind, found[0].severity) == (kind, FAULT)
    assert {f.kind for f in found if f.severity == FAULT} == faults  # the drops make TCP retransmit: both real
    assert any(evidence in f"{e.metric} {e.value}" for e in found[0].evidence)
