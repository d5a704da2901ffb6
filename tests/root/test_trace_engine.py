# SPDX-License-Identifier: Apache-2.0
"""The hop engine on the real flannel VXLAN lab: real BPF, real namespaces, real packets.

Counting a known number of packets and asserting exactly that number per hop is the core check: it fails if a
point is missed, a packet is double counted, or tracking leaks between packets.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from cniprof.analysis.accounting import accounting
from cniprof.analysis.summary import analyze
from cniprof.run import trace

pytestmark = pytest.mark.root

N = 23
UNDERLAY = "underlay xmit + underlay backlog"


def _expected(snapshot: dict, direction: int) -> list[dict]:
    return sorted(
        (h for h in snapshot["hops"] if h["expected"] and h["dir"] == direction), key=lambda h: h["seq"]
    )


def test_full_points_split_veth_xmit_from_backlog(lab) -> None:
    res = _run(traffic="udp", count=N, events=("queue", "rx", "receive"))
    fwd = [h for h in _expected(res.record.snapshot, 0) if h["in_e2e"]]
    roles = [h["role"] for h in fwd]
    assert roles[:2] == ["pod veth xmit", "host veth backlog"] and "underlay xmit" in roles
    assert len(fwd) == 12 and {h["count"] for h in fwd} == {N}


def _run(**kw) -> trace.TraceResult:
    opts = trace.TraceOptions(cni="flannel", duration_s=kw.pop("duration_s", 3.0), interval_s=0.2, **kw)
    return trace.run(opts)


def test_udp_burst_counts_exactly_n_per_hop(lab) -> None:
    res = _run(traffic="udp", count=N)
    assert res.record.traffic["received"] == N
    fwd = _expected(res.record.snapshot, 0)
    roles = [h["role"] for h in fwd]
    assert roles == ["pod veth xmit + host veth backlog", "bridge input", "ip forward", "vxlan encap",
                     "underlay xmit + underlay backlog", "vxlan decap", "ip forward", "bridge xmit",
                     "host veth xmit + pod backlog", "socket delivery"]
    for h in fwd:
        if h["in_e2e"]:
            assert h["count"] == N, (h["role"], h["count"])
    e2e = res.record.snapshot["e2e"][0]
    assert e2e["count"] == N
    # per packet the hops add up to the end-to-end time exactly; the kernel sums must agree
    assert sum(h["sum_ns"] for h in fwd if h["in_e2e"]) == e2e["sum_ns"]
    assert res.record.snapshot["counters"]["unexpected"] == 0
    assert not res.record.snapshot["drops"]


def test_ping_counts_both_directions(lab) -> None:
    res = _run(traffic="ping", count=5)
    for d in (0, 1):
        hops = [h for h in _expected(res.record.snapshot, d) if h["in_e2e"]]
        assert len(hops) == 9
        assert {h["count"] for h in hops} == {5}, [(h["role"], h["count"]) for h in hops]
    a = analyze(res.record.snapshot, res.model.chain("cross-node"))
    for _, row in a.reconciliation.iterrows():
        assert abs(row["unattributed_pct"]) < 2.0


def test_same_node_path_has_no_tunnel(lab) -> None:
    res = _run(traffic="udp", count=N, path="same-node")
    fwd = [h for h in _expected(res.record.snapshot, 0) if h["in_e2e"]]
    assert [h["role"] for h in fwd] == [
        "pod veth xmit + host veth backlog",
        "bridge forward",
        "host veth xmit + pod backlog",
    ]
    assert {h["count"] for h in fwd} == {N}


def _ns(netns: str, *cmd: str) -> None:
    subprocess.run(["ip", "netns", "exec", netns, *cmd], check=True)


def _kernel_has(option: str) -> bool:
    import gzip

    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            return any(line.startswith(f"{option}=") for line in f)
    except OSError:
        return True  # no config to read: let tc answer


def _fwd_hops(res: trace.TraceResult):
    a = analyze(res.record.snapshot, res.model.chain("cross-node"))
    fwd = a.hops_for(a.forward)
    return fwd[fwd["expected"] & fwd["in_e2e"]]


@pytest.mark.skipif(not _kernel_has("CONFIG_NET_SCH_NETEM"), reason="kernel lacks CONFIG_NET_SCH_NETEM (netem)")
def test_netem_delay_shows_on_its_hop_only(lab) -> None:
    node1 = lab.node("node1").netns
    _ns(node1, "tc", "qdisc", "add", "dev", "eth0", "root", "netem", "delay", "5ms")
    try:
        res = _run(traffic="ping", count=10)
    finally:
        _ns(node1, "tc", "qdisc", "del", "dev", "eth0", "root")
    fwd = _fwd_hops(res)
    delayed = fwd[fwd["role"] == UNDERLAY].iloc[0]
    # netem adds at least its 5 ms (the bucket's lower edge is within 6.25 %); how much more is the machine's
    assert delayed["p50_us"] >= 5000 * (1 - 0.0625), delayed["p50_us"]
    assert (fwd[fwd["role"] != UNDERLAY]["mean_us"] * 10 < delayed["mean_us"]).all()


def test_qdisc_queueing_shows_on_its_hop_only(lab) -> None:
    """A token bucket slower than the sender queues packets on node1's underlay: only that hop grows.

    23 datagrams of ~1.1 kB on the wire every 1 ms into 2 Mbit/s (4.3 ms each): the k-th waits ~3.3*k ms, the
    other hops take microseconds. No absolute time is asserted (a loaded machine paces the sender differently):
    the token bucket's own counter says packets waited, and the hop table must put that wait on its hop only.
    """
    node1 = lab.node("node1").netns
    tbf = ["tbf", "rate", "2mbit", "burst", "1600", "limit", "200000"]
    _ns(node1, "tc", "qdisc", "add", "dev", "eth0", "root", *tbf)
    try:
        res = _run(traffic="udp", count=N, payload_size=1000)
        stats = json.loads(subprocess.run(["ip", "netns", "exec", node1, "tc", "-j", "-s", "qdisc", "show", "dev",
                                           "eth0"], capture_output=True, text=True, check=True).stdout)
    finally:
        _ns(node1, "tc", "qdisc", "del", "dev", "eth0", "root")
    (qdisc,) = [q for q in stats if q["kind"] == "tbf"]
    assert qdisc["overlimits"] > 0, qdisc  # the bucket held packets back
    assert res.record.traffic["received"] == N
    fwd = _fwd_hops(res)
    queued = fwd[fwd["role"] == UNDERLAY].iloc[0]
    acc = accounting(res.record.snapshot)
    told = (fwd[["role", "packets"]].to_dict("records"), acc, res.record.snapshot["counters"])
    # Now and then a packet's way out of the token bucket runs no tracing program at all on this kernel: bpftrace's
    # own tracepoints (net_dev_xmit, netif_rx, netif_receive_skb, net_dev_queue) missed the same packet at every
    # point after node1 eth0 queue in 6 of 180 runs, while the receiver got all 23 (KNOWN_ISSUES.md); a CI run had
    # two such packets in one run. The accounting still holds every packet (those at node1 eth0 queue, in flight
    # or freed there); the hop is asserted to carry most of the packets and the wait, not an exact count, which
    # test_udp_burst_counts_exactly_n_per_hop asserts without a bucket.
    assert acc.started == N and acc.unexplained == 0, told
    left = sum(n for rows in acc.where.values() for point, n in rows if point == "node1 eth0 queue")
    assert queued["packets"] >= N * 3 // 4 and queued["packets"] + left <= N, told
    others = fwd[fwd["role"] != UNDERLAY]
    assert queued["mean_us"] > 10 * others["mean_us"].max(), fwd[["role", "mean_us"]]
    assert queued["share_pct"] > 50, told


def test_iptables_drop_is_reported_at_its_node(lab) -> None:
    node2 = lab.node("node2").netns
    dst = lab.pods[2].ip if len(lab.pods) > 2 else lab.pods[1].ip
    rule = ["FORWARD", "-d", dst, "-p", "udp", "-j", "DROP"]
    had_table = subprocess.run(["ip", "netns", "exec", node2, "nft", "list", "table", "ip", "filter"],
                               capture_output=True, check=False).returncode == 0
    _ns(node2, "iptables", "-I", *rule)
    try:
        res = _run(traffic="udp", count=N)
    finally:
        _ns(node2, "iptables", "-D", *rule)
        if not had_table:  # leave the namespace as it was: an empty iptables-nft table still hooks every packet
            _ns(node2, "nft", "delete", "table", "ip", "filter")
    assert res.record.traffic["received"] == 0
    a = analyze(res.record.snapshot, res.model.chain("cross-node"))
    drops = a.drops
    hit = drops[drops["reason"].str.contains("NETFILTER_DROP")]
    assert int(hit["count"].sum()) == N
    assert set(hit["node"]) == {"node2"}
