# SPDX-License-Identifier: Apache-2.0
"""The benchmark generators (sockperf, nginx + wrk, connect rate) for real, between two throwaway namespaces.

This session's own `cniprof_<id>-bench-a` (10.98.5.1/24) and `...-bench-b` (10.98.5.2/24) (owned.netns_name:
the fixed ports below are private to the session), joined by a veth pair created inside bench-a with its peer
placed directly in bench-b: the lab's namespaces and the root namespace are never touched. Each run
is 1 s; the module takes ~10 s.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import netpair
import owned
import pytest

from cniprof.errors import CniprofError
from cniprof.traffic.connect_rate import ConnectRate
from cniprof.traffic.http import HttpBench
from cniprof.traffic.sockperf import Sockperf

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
]

NS_A, NS_B = owned.netns_name("bench-a"), owned.netns_name("bench-b")
IP_B = "10.98.5.2"


@pytest.fixture(scope="module")
def veth_pair() -> Iterator[tuple[str, str]]:
    with netpair.veth_pair(NS_A, NS_B, "10.98.5.1", IP_B, "cpb5-x", "cpb5-y") as pair:
        yield pair


@pytest.fixture(autouse=True)
def no_process_left() -> Iterator[None]:
    with netpair.no_process_left():
        yield


# Each generator's own numbers are checked against what the kernel counted in the namespaces (an independent
# expectation), never against a rate: how much a 1 s run achieves depends on the machine and its load.


@pytest.mark.parametrize("tcp", [True, False])
def test_sockperf_ping_pong(veth_pair, tcp):
    before = netpair.snmp(NS_B)
    with Sockperf(NS_A, NS_B, IP_B, duration_s=1, tcp=tcp, port=11200 + tcp) as gen:
        r = gen.wait()
    after = netpair.snmp(NS_B)
    assert r.proto == ("tcp" if tcp else "udp") and r.full_rtt
    assert 0 < r.min_us <= r.p50_us <= r.p99_us <= r.p999_us <= r.max_us
    assert r.observations >= 1
    # every observed round trip is a message the server received (plus warm-up messages sockperf does not count)
    received = netpair.delta(after, before, "TcpInSegs" if tcp else "UdpInDatagrams")
    assert received >= r.observations, (received, r.observations)


@pytest.mark.parametrize("body", [0, 100 * 1024])
def test_nginx_wrk(veth_pair, body):
    before = netpair.snmp(NS_A)
    gen = HttpBench(NS_A, NS_B, IP_B, duration_s=1, body_bytes=body, port=8180)
    with gen:
        prefix = gen.prefix
        assert prefix is not None and (prefix / "www" / "body").stat().st_size == body
        r = gen.wait()
    after = netpair.snmp(NS_A)
    assert r.requests >= 1 and r.errors == 0
    assert 0 < r.p50_us <= r.p99_us
    # the client's namespace received every response wrk counted, body included
    assert netpair.delta(after, before, "IpExtInOctets") >= r.requests * body
    if body:
        assert r.transfer_bytes_per_s >= 0.99 * r.requests_per_s * body  # wrk prints 3 significant digits
    assert not prefix.exists(), "nginx prefix directory left behind"


def test_wrk_against_nothing_fails_in_one_line(veth_pair):
    gen = HttpBench(NS_A, NS_B, "10.98.5.1", duration_s=1, port=8181)  # nginx on the client's own address
    gen.server_netns = NS_A
    gen.start()
    gen._client.kill()  # type: ignore[union-attr]
    with pytest.raises(CniprofError) as err:
        gen.wait()
    assert "\n" not in str(err.value)


def test_connect_rate(veth_pair):
    before = netpair.snmp(NS_A)
    with ConnectRate(NS_A, NS_B, IP_B, duration_s=1, port=5480) as gen:
        r = gen.wait()
    after = netpair.snmp(NS_A)
    assert r.connects >= 1 and r.errors == 0
    assert netpair.delta(after, before, "TcpActiveOpens") == r.connects  # one handshake per connect, no other
    assert netpair.delta(after, before, "TcpAttemptFails") == 0
    assert r.p50_us is not None and r.p50_us > 0


def test_sockperf_without_server_fails_in_one_line(veth_pair):
    gen = Sockperf(NS_A, NS_B, IP_B, duration_s=1, port=11210)
    gen.start()
    gen._server.kill()  # type: ignore[union-attr]
    with pytest.raises(CniprofError, match="sockperf failed") as err:
        gen.wait()
    assert "\n" not in str(err.value)
