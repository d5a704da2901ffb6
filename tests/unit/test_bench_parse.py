# SPDX-License-Identifier: Apache-2.0
"""Parsers of the benchmark generators, on outputs recorded here (sockperf 3.7, wrk 4.1 + nginx 1.22, the
connect-rate connector) between two namespaces joined by a veth pair."""

from __future__ import annotations

from pathlib import Path

import pytest

from cniprof.errors import CniprofError
from cniprof.traffic.connect_rate import parse_result
from cniprof.traffic.http import HttpBench, parse_wrk
from cniprof.traffic.sockperf import Sockperf, parse_sockperf

DATA = Path(__file__).parent / "data"


def load(name: str) -> str:
    return (DATA / name).read_text()


def test_sockperf_tcp_full_rtt_percentiles():
    r = parse_sockperf(load("sockperf_tcp.txt"))
    assert (r.proto, r.full_rtt) == ("tcp", True)
    assert (r.avg_us, r.p50_us, r.p99_us, r.p999_us) == (57.123, 55.231, 86.357, 133.016)
    assert (r.min_us, r.max_us, r.observations, r.dropped) == (19.779, 3397.31, 9628, 0)
    assert r.valid_s == pytest.approx(0.55)


def test_sockperf_udp():
    r = parse_sockperf(load("sockperf_udp.txt"))
    assert r.proto == "udp" and r.p50_us == pytest.approx(49.863) and r.p999_us == pytest.approx(111.644)


@pytest.mark.parametrize(("name", "words"), [("sockperf_refused.txt", "Connection refused"),
                                              ("sockperf_noreply.txt", "No messages were received")])
def test_sockperf_failures_are_one_line(name, words):
    with pytest.raises(CniprofError, match=words) as err:
        parse_sockperf(load(name))
    assert "\n" not in str(err.value)


def test_sockperf_garbage():
    with pytest.raises(CniprofError, match="no latency summary: hello"):
        parse_sockperf("hello\n")


def test_sockperf_argv_is_bounded_and_full_rtt():
    gen = Sockperf("a", "b", "10.0.0.2", duration_s=2.5, tcp=False, msg_size=100, port=11000)
    assert gen.client_argv() == ["sockperf", "ping-pong", "-i", "10.0.0.2", "-p", "11000", "-t", "3", "-m", "100",
                                 "--full-rtt"]
    assert "--tcp" in Sockperf("a", "b", "10.0.0.2", 1).server_argv()


def test_wrk_small_body():
    r = parse_wrk(load("wrk_0.txt"))
    assert (r.requests, r.requests_per_s, r.errors) == (94937, 86334.7, 0)
    assert (r.p50_us, r.p75_us, r.p90_us, r.p99_us) == (46.0, 54.0, 57.0, 112.0)
    assert r.latency_avg_us == pytest.approx(53.1) and r.latency_max_us == pytest.approx(3450.0)


def test_wrk_units_ms_and_gb():
    r = parse_wrk(load("wrk_1m.txt"))
    assert r.p99_us == pytest.approx(42120.0) and r.latency_max_us == pytest.approx(57870.0)
    assert r.transfer_bytes_per_s == pytest.approx(2.23 * (1 << 30))
    assert parse_wrk(load("wrk_100k.txt")).transfer_bytes_per_s == pytest.approx(1.29 * (1 << 30))


def test_wrk_non_2xx_are_errors():
    r = parse_wrk(load("wrk_404.txt"))
    assert r.non_2xx == r.requests == 86232 and r.errors == 86232


def test_wrk_socket_errors_summed():
    text = load("wrk_0.txt").replace("Requests/sec", "  Socket errors: connect 1, read 2, write 3, timeout 4\n"
                                     "Requests/sec")
    assert parse_wrk(text).socket_errors == 10


def test_wrk_refused_is_one_line():
    with pytest.raises(CniprofError, match="unable to connect to 10.98.5.2:8081 Connection refused"):
        parse_wrk(load("wrk_refused.txt"))


def test_wrk_argv_and_validation():
    gen = HttpBench("a", "b", "10.0.0.2", duration_s=1.2, body_bytes=100, connections=8, threads=2)
    assert gen.client_argv()[-1] == "http://10.0.0.2:8080/body" and "2s" in gen.client_argv()
    with pytest.raises(CniprofError, match="connections >= threads"):
        HttpBench("a", "b", "10.0.0.2", 1, connections=1, threads=2)


def test_connect_rate_result():
    r = parse_result(load("connect_rate.json"))
    assert (r.connects, r.errors, r.p50_us, r.p99_us) == (23231, 0, 30.2, 70.6)
    assert r.connects_per_s == pytest.approx(23230.756, rel=1e-6)


def test_connect_rate_all_refused_is_an_error():
    text = '{"connects": 0, "errors": 5, "duration_s": 1.0, "connects_per_s": 0.0, "first_error": "Connection refused"}'
    with pytest.raises(CniprofError, match="no connection succeeded: Connection refused"):
        parse_result(text)
    with pytest.raises(CniprofError, match="printed no result: Traceback"):
        parse_result("", "Traceback\n")
