# SPDX-License-Identifier: Apache-2.0
"""Each traffic generator for real, between two throwaway namespaces joined by a veth pair.

The namespaces are this session's own (owned.netns_name: `cniprof_<id>-traffic-a` with 10.99.0.1/24 and
`...-traffic-b` with 10.99.0.2/24), so the fixed ports below are private to the session. The veth pair is created
inside traffic-a with its peer placed directly in traffic-b, so the root namespace's networking is never touched.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import netpair
import owned
import pytest

from cniprof.traffic.iperf3 import Iperf3
from cniprof.traffic.ping import Ping
from cniprof.traffic.udp_burst import UdpBurst

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
]

NS_A, NS_B = owned.netns_name("traffic-a"), owned.netns_name("traffic-b")
IP_A, IP_B = "10.99.0.1", "10.99.0.2"


@pytest.fixture(scope="module")
def veth_pair() -> Iterator[tuple[str, str]]:
    with netpair.veth_pair(NS_A, NS_B, IP_A, IP_B, "cpt-a", "cpt-b") as pair:
        yield pair


@pytest.fixture(autouse=True)
def no_process_left() -> Iterator[None]:
    with netpair.no_process_left():
        yield


def test_iperf3_tcp(veth_pair):
    with Iperf3(NS_A, NS_B, IP_B, duration_s=2) as gen:
        result = gen.wait()
    assert result.throughput_bps > 0
    assert result.retransmits is not None and result.retransmits >= 0
    assert result.duration_s == pytest.approx(2, abs=0.5)
    assert result.raw["start"]["connected"][0]["remote_host"] == IP_B


def test_iperf3_udp_paced(veth_pair):
    with Iperf3(NS_A, NS_B, IP_B, duration_s=1, udp=True, bitrate="20M", port=5202, cport=41234) as gen:
        result = gen.wait()
    assert result.throughput_bps > 0
    assert result.retransmits is None and result.lost_packets is not None
    assert result.raw["start"]["connected"][0]["local_port"] == 41234


def test_udp_burst_counts_exactly(veth_pair):
    with UdpBurst(NS_A, NS_B, IP_B, count=23, payload_size=200) as gen:
        result = gen.wait()
    assert (result.sent, result.received, result.lost) == (23, 23, 0)
    assert result.received_bytes == 23 * 200


def test_udp_burst_to_nobody_receives_nothing(veth_pair):
    """The receiver listens in B, but the packets go to an address nobody has: received 0, not an error."""
    with UdpBurst(NS_A, NS_B, "10.99.0.77", count=3, port=5301) as gen:
        result = gen.wait(timeout=10)
    assert (result.sent, result.received) == (3, 0)


def test_ping(veth_pair):
    with Ping(NS_A, IP_B, count=3) as gen:
        result = gen.wait()
    assert (result.transmitted, result.received, result.loss_pct) == (3, 3, 0.0)
    assert sorted(result.rtts_ms) == [1, 2, 3]
    assert result.min_ms is not None and result.min_ms <= result.avg_ms <= result.max_ms


def test_stop_kills_a_running_generator(veth_pair):
    """stop() ends a 30 s iperf3 long before its time; no_process_left checks that its processes are gone."""
    started = time.monotonic()
    gen = Iperf3(NS_A, NS_B, IP_B, duration_s=30, port=5203)
    gen.start()
    owned.wait_for(lambda: gen.running() and len(owned.descendants(os.getpid())) >= 2, "iperf3 server and client")
    gen.stop()
    assert not gen.running()
    assert time.monotonic() - started < 30  # killed: it did not run to its end


def test_missing_namespace_is_a_usage_error():
    from cniprof.errors import UsageError

    missing = owned.netns_name("traffic-nope")
    with pytest.raises(UsageError, match=f"network namespace '{missing}' does not exist"):
        Ping(missing, IP_B, count=1).start()
