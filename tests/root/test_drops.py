# SPDX-License-Identifier: Apache-2.0
"""Known loss at each kind of place of the flannel and calico:vxlan paths, and the probe must find exactly it.

Each case drops a known share of 400 paced UDP datagrams (pod-a → pod-c) at one place — a pod's host veth, the
bridge, the tunnel device's egress, the underlay, the receiving side — with a tc program (tests/root/dropper.py:
every 4th matching packet), a netfilter rule (`-m statistic --mode nth --every 4`) or a tbf queue too short for
the burst, and reads the truth from the dropper's own counters, the rule's packet counter or the qdisc's drop
counter. The probe must report exactly that many drops, at the last point the packets passed before the place,
with this kernel's reason name, no other loss, and an accounting that adds up to `started` with nothing left
unexplained. Issue 17: a drop after the tunnel device's headroom expansion was missed entirely.

Also here: the accounting is exact under an 8-stream iperf3 load traced with `--traffic none` (issue 11), and
`cniprof advise` on an exported run with such a loss ranks the loss first.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from dropper import dropper

from cniprof.analysis.accounting import accounting
from cniprof.analysis.summary import analyze
from cniprof.cni import registry
from cniprof.cni.topology import Topology
from cniprof.lab import cleanup, kernel, realize
from cniprof.netns_exec import attempt_in, run_in
from cniprof.run import trace
from cniprof.traffic.iperf3 import Iperf3

pytestmark = pytest.mark.root

N = 400  # datagrams per run
EVERY = 4  # the dropper and the netfilter rule drop every 4th: 100 of 400
ROOT = Path(__file__).resolve().parents[2]


def _ns(netns: str, *argv: str) -> str:
    return run_in(netns, list(argv))


@dataclass
class Truth:
    dropped: int = 0


@contextmanager
def tc_dropper(netns: str, device: str, hook: str, **match: str) -> Iterator[Truth]:
    truth = Truth()
    with dropper(netns, device, hook, EVERY, **match) as d:
        yield truth
    assert d.matched == N, f"the dropper at {device} {hook} matched {d.matched} of {N} packets"
    truth.dropped = d.dropped


@contextmanager
def nth_rule(netns: str, chain: str, dst: str) -> Iterator[Truth]:
    """iptables DROP of every 4th UDP datagram to dst in chain (filter table); the rule's counter is the truth."""
    had_table = attempt_in(netns, ["nft", "list", "table", "ip", "filter"]).returncode == 0
    rule = [chain, "-d", dst, "-p", "udp", "-m", "statistic", "--mode", "nth", "--every", str(EVERY),
            "--packet", str(EVERY - 1), "-j", "DROP"]
    truth = Truth()
    _ns(netns, "iptables", "-I", *rule)
    try:
        yield truth
        listing = _ns(netns, "iptables", "-L", chain, "-v", "-x", "-n")
        truth.dropped = sum(int(line.split()[0]) for line in listing.splitlines() if "statistic mode nth" in line)
    finally:
        _ns(netns, "iptables", "-D", *rule)
        if not had_table:  # an empty iptables-nft table would still hook every packet of the lab
            _ns(netns, "nft", "delete", "table", "ip", "filter")


@contextmanager
def tbf_limit(netns: str, device: str) -> Iterator[Truth]:
    """A token bucket slower than the burst with a queue of ~1 datagram: it drops what does not fit."""
    truth = Truth()
    _ns(netns, "tc", "qdisc", "add", "dev", device, "root", "tbf", "rate", "300kbit", "burst", "1600", "limit", "400")
    try:
        yield truth
        stats = json.loads(_ns(netns, "tc", "-s", "-j", "qdisc", "show", "dev", device))
        truth.dropped = sum(int(q.get("drops", 0)) for q in stats if q.get("kind") == "tbf")
    finally:
        _ns(netns, "tc", "qdisc", "del", "dev", device, "root")


@dataclass(frozen=True)
class Case:
    place: str  # the kind of place
    inject: Callable[[Topology], AbstractContextManager[Truth]]
    point: Callable[[Topology], str]  # the last point the dropped packets passed (its point name)
    reason: str  # this kernel's drop reason name (enum skb_drop_reason without SKB_DROP_REASON_)


def _node(t: Topology, n: str) -> str:
    return t.node(n).netns


def _pod(t: Topology, name: str):
    return next(p for p in t.pods if p.name == name)


def _dst(t: Topology) -> str:
    return _pod(t, "pod-c").ip


def _host_veth(t: Topology, pod: str) -> str:
    hv = _pod(t, pod).host_veth
    return hv if isinstance(hv, str) else hv.name


def _tunnel(t: Topology, node: str) -> str:
    return next(d.name for d in t.node(node).devices if d.role in ("vxlan", "tunnel"))


def _underlay(t: Topology, node: str) -> str:
    return next(d.name for d in t.node(node).devices if d.role == "underlay")


def _underlay_ips(t: Topology) -> dict[str, str]:
    return {"saddr": t.underlay_ips["node1"], "daddr": t.underlay_ips["node2"]}


COMMON = [
    Case("pod veth (tc ingress of the source pod's host veth)",
         lambda t: tc_dropper(_node(t, "node1"), _host_veth(t, "pod-a"), "ingress", daddr=_dst(t)),
         lambda t: f"node1 {_host_veth(t, 'pod-a')} receive", "TC_INGRESS"),
    Case("tunnel device egress (tc, after the headroom expansion: issue 17)",
         lambda t: tc_dropper(_node(t, "node1"), _tunnel(t, "node1"), "egress", daddr=_dst(t)),
         None, "TC_EGRESS"),  # point: model-specific, below
    Case("underlay egress (tc on the encapsulated packets)",
         lambda t: tc_dropper(_node(t, "node1"), _underlay(t, "node1"), "egress", **_underlay_ips(t)),
         lambda t: f"node1 {_tunnel(t, 'node1')} queue", "TC_EGRESS"),
    Case("underlay queue (tbf limit)",
         lambda t: tbf_limit(_node(t, "node1"), _underlay(t, "node1")),
         lambda t: f"node1 {_underlay(t, 'node1')} queue", "QDISC_DROP"),
    Case("receiving side, underlay (tc ingress)",
         lambda t: tc_dropper(_node(t, "node2"), _underlay(t, "node2"), "ingress", **_underlay_ips(t)),
         lambda t: f"node2 {_underlay(t, 'node2')} receive", "TC_INGRESS"),
    Case("receiving side, forwarding (netfilter FORWARD on the destination node)",
         lambda t: nth_rule(_node(t, "node2"), "FORWARD", _dst(t)),
         lambda t: f"node2 {_tunnel(t, 'node2')} receive", "NETFILTER_DROP"),
    Case("receiving side, destination pod (netfilter INPUT, after the path's end)",
         lambda t: nth_rule(_pod(t, "pod-c").netns, "INPUT", _dst(t)),
         lambda t: "node2 pod-c eth0 receive", "NETFILTER_DROP"),
]

FLANNEL = [
    *COMMON[:1],
    Case("bridge (tc egress of cni0 into the bridge, destination node)",
         lambda t: tc_dropper(_node(t, "node2"), "cni0", "egress", daddr=_dst(t)),
         lambda t: "node2 flannel.1 receive", "TC_EGRESS"),
    Case("bridge input (netfilter FORWARD, source node: br_netfilter and routing)",
         lambda t: nth_rule(_node(t, "node1"), "FORWARD", _dst(t)),
         lambda t: "node1 cni0 receive", "NETFILTER_DROP"),
    Case(COMMON[1].place, COMMON[1].inject, lambda t: "node1 cni0 receive", "TC_EGRESS"),
    *COMMON[2:],
]
CALICO = [
    *COMMON[:1],
    Case(COMMON[1].place, COMMON[1].inject, lambda t: f"node1 {_host_veth(t, 'pod-a')} receive", "TC_EGRESS"),
    *COMMON[2:],
]


def _warm(t: Topology) -> None:
    """Replies teach the bridges and neighbour tables pod-c's address first: a one-way burst to a MAC the bridge
    has forgotten is flooded, and the tracked original skb may then go to another pod (KNOWN_ISSUES.md)."""
    _ns(_pod(t, "pod-c").netns, "ping", "-c", "1", "-W", "2", _pod(t, "pod-a").ip)


def _check_case(t: Topology, cni: str, case: Case) -> None:
    _warm(t)
    with case.inject(t) as truth:
        res = trace.run(trace.TraceOptions(cni=cni, duration_s=3.0, interval_s=0.5, traffic="udp", count=N,
                                           sample_every=1))
    assert truth.dropped > 0, f"{case.place}: nothing was dropped, the case tests nothing"
    if "tbf" not in case.place:
        assert truth.dropped == N // EVERY
    a = analyze(res.record.snapshot)
    drops = {(r["point"], r["reason"]): int(r["count"]) for r in a.drops.to_dict("records")}
    assert drops == {(case.point(t), case.reason): truth.dropped}, (case.place, drops, truth.dropped)
    assert res.record.traffic["received"] == N - truth.dropped
    acc = accounting(res.record.snapshot)
    assert acc.started == N and acc.unexplained == 0 and acc.complete, acc
    assert acc.dropped == truth.dropped
    # the tracker may lose a few UDP slots it keeps after the path's end (a hash clash with a later start while
    # the datagram waits for its reader: 5 of 400 seen once), never one on the way
    assert {p for p, _ in acc.where.get("lost", ())} <= {"node2 pod-c eth0 receive"}, acc.where["lost"]


@pytest.mark.parametrize("case", FLANNEL, ids=[c.place.split(" (")[0] + f"-{i}" for i, c in enumerate(FLANNEL)])
def test_flannel_drop_found_exactly_at_its_point(lab, case) -> None:
    _check_case(lab, "flannel", case)


@pytest.fixture(scope="module")
def calico_vxlan() -> Iterator[Topology]:
    """Its own calico:vxlan lab (the session's flannel lab is removed first: these tests are lab_destructive)."""
    gone = kernel.missing(registry.parse("calico:vxlan").requires)
    if gone:
        pytest.skip(str(kernel.missing_error("calico:vxlan", *gone[0])))
    cleanup.teardown()
    topology, _ = realize.up("calico", "vxlan")
    try:
        yield topology
    finally:
        cleanup.teardown()


@pytest.mark.lab_destructive
@pytest.mark.parametrize("case", CALICO, ids=[c.place.split(" (")[0] + f"-{i}" for i, c in enumerate(CALICO)])
def test_calico_vxlan_drop_found_exactly_at_its_point(calico_vxlan, case) -> None:
    _check_case(calico_vxlan, "calico:vxlan", case)


def test_accounting_exact_under_eight_streams(lab) -> None:
    """iperf3 -P 8 between pod-a and pod-c, traced with --traffic none --sample 1 while the load runs (issue 11):
    every started packet is in exactly one category, nothing unexplained; most data segments end coalesced."""
    a, c = _pod(lab, "pod-a"), _pod(lab, "pod-c")
    gen = Iperf3(a.netns, c.netns, c.ip, 8.0, streams=8, port=5281)
    gen.start()
    try:
        res = trace.run(trace.TraceOptions(cni="flannel", duration_s=5.0, interval_s=1.0, traffic="none",
                                           sample_every=1))
    finally:
        result = gen.wait(timeout=30)
    assert result.throughput_bps > 0
    acc = accounting(res.record.snapshot)
    assert acc.complete and acc.started > 10_000, acc
    assert acc.unexplained == 0, acc.to_dict()
    assert min(acc.category(k) for k in ("delivered", "dropped", "freed", "unseen", "lost", "stale",
                                         "in_flight")) >= 0
    assert acc.delivered > acc.started // 2, acc.to_dict()


def test_accounting_exact_across_the_sampling_restart(lab) -> None:
    """--sample auto under an iperf3 load picks 1 in N after calibration and restarts the aggregates while packets
    are in flight: those belong to the old epoch, whose ends are not counted, so the new epoch still adds up."""
    res = trace.run(trace.TraceOptions(cni="flannel", duration_s=4.0, interval_s=1.0, traffic="iperf3",
                                       sample_every=0))
    assert res.record.sample_every > 1, res.record.sampling  # the restart happened
    acc = accounting(res.record.snapshot)
    assert acc.complete and acc.started > 1000 and acc.unexplained == 0, acc.to_dict()


def test_advise_ranks_the_loss_first(lab, tmp_path) -> None:
    """The whole chain on the issue-17 case: trace --export with 25 % dropped at flannel.1's egress, then advise."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = tmp_path / "run"
    _warm(lab)
    with tc_dropper(_node(lab, "node1"), "flannel.1", "egress", daddr=_dst(lab)):
        subprocess.run([sys.executable, "-m", "cniprof", "trace", "--cni", "flannel", "--traffic", "udp", "--count",
                        str(N), "--duration", "3", "--sample", "1", "--no-ui", "--export", str(out)],
                       check=True, env=env, capture_output=True, text=True, timeout=120)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["accounting"]["categories"]["dropped"] == N // EVERY
    assert summary["accounting"]["unexplained"] == 0
    assert summary["drops"] == [{"point": "node1 cni0 receive", "node": "node1", "device": "cni0",
                                 "reason": "TC_EGRESS", "reason_code": summary["drops"][0]["reason_code"],
                                 "count": N // EVERY}]
    csv = (out / "drops.csv").read_text().splitlines()
    assert csv[1:] == [f"node1 cni0 receive,node1,cni0,TC_EGRESS,{N // EVERY}"]
    adv = subprocess.run([sys.executable, "-m", "cniprof", "advise", str(out), "--json"], check=True, env=env,
                         capture_output=True, text=True, timeout=120)
    findings = json.loads(adv.stdout)
    top = (findings["findings"] if isinstance(findings, dict) else findings)[0]
    assert (top["kind"], top["severity"], top["rank"]) == ("drops", "fault", 1), top
    assert re.search(r"25\.0%", top["title"]) and "node1 cni0 receive" in top["title"], top["title"]
