# SPDX-License-Identifier: Apache-2.0
"""Parsers of the traffic generators, on outputs recorded from the real tools (iperf3 3.12, iputils ping)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from cniprof.errors import CniprofError
from cniprof.traffic.iperf3 import Iperf3, parse_client_json
from cniprof.traffic.ping import Ping, parse_ping
from cniprof.traffic.udp_burst import UdpBurst, count_datagrams, open_receiver, parse_end, run_sender

DATA = Path(__file__).parent / "data"


def load(name: str) -> str:
    return (DATA / name).read_text()


def test_iperf3_tcp_uses_receiver_throughput_and_sender_retransmits():
    r = parse_client_json(load("iperf3_tcp.json"))
    assert r.throughput_bps == pytest.approx(16227820854.927849)  # end.sum_received, not sum_sent
    assert r.retransmits == 6
    assert r.duration_s == pytest.approx(1.000061)
    assert r.bytes == 2028601344
    assert r.lost_packets is None
    assert r.raw["start"]["test_start"]["protocol"] == "TCP"


def test_iperf3_tcp_two_streams_sums():
    r = parse_client_json(load("iperf3_tcp_2streams.json"))
    assert r.throughput_bps == pytest.approx(23137079373.89886)
    assert r.retransmits == 7
    assert len(r.raw["end"]["streams"]) == 2


def test_iperf3_udp_has_loss_and_no_retransmits():
    r = parse_client_json(load("iperf3_udp.json"))
    assert r.retransmits is None
    assert r.throughput_bps == pytest.approx(10221275.3279499)
    assert r.lost_packets == 0
    assert r.lost_percent == 0


def test_iperf3_error_key_becomes_one_line_error():
    with pytest.raises(CniprofError) as e:
        parse_client_json(load("iperf3_error.json"))
    assert str(e.value) == "iperf3 failed: unable to connect to server: Connection refused"
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("text", ["", "iperf3: error - unable to start", "[1, 2]", '{"start": {}, "end": {}}'])
def test_iperf3_garbage_is_a_cniprof_error(text):
    with pytest.raises(CniprofError):
        parse_client_json(text)


def test_iperf3_command_lines():
    g = Iperf3("a", "b", "10.0.0.2", 2.5, port=5999, streams=2, udp=True, bitrate="10M", cport=40000)
    assert g.server_argv() == ["iperf3", "-s", "-1", "-p", "5999"]
    argv = g.client_argv()
    assert argv[:8] == ["iperf3", "-c", "10.0.0.2", "-p", "5999", "-t", "3", "-J"]
    for flags in (["-P", "2"], ["-b", "10M"], ["--cport", "40000"]):
        i = argv.index(flags[0])
        assert argv[i : i + 2] == flags
    assert "-u" in argv


PING_OK = """\
PING 10.99.0.2 (10.99.0.2) 56(84) bytes of data.
64 bytes from 10.99.0.2: icmp_seq=1 ttl=64 time=0.061 ms
64 bytes from 10.99.0.2: icmp_seq=2 ttl=64 time=0.052 ms
64 bytes from 10.99.0.2: icmp_seq=3 ttl=64 time=0.058 ms

--- 10.99.0.2 ping statistics ---
3 packets transmitted, 3 received, 0% packet loss, time 405ms
rtt min/avg/max/mdev = 0.052/0.057/0.061/0.003 ms
"""

PING_PARTIAL = """\
PING 10.99.0.2 (10.99.0.2) 56(84) bytes of data.
64 bytes from 10.99.0.2: icmp_seq=1 ttl=64 time=1.25 ms
64 bytes from 10.99.0.2: icmp_seq=3 ttl=64 time=0.912 ms
64 bytes from 10.99.0.2: icmp_seq=3 ttl=64 time=0.990 ms (DUP!)

--- 10.99.0.2 ping statistics ---
4 packets transmitted, 2 received, +1 duplicates, 50% packet loss, time 610ms
rtt min/avg/max/mdev = 0.912/1.050/1.250/0.140 ms
"""

PING_NONE = """\
PING 10.99.0.77 (10.99.0.77) 56(84) bytes of data.

--- 10.99.0.77 ping statistics ---
2 packets transmitted, 0 received, 100% packet loss, time 202ms

"""

PING_ERRORS = """\
PING 10.99.0.9 (10.99.0.9) 56(84) bytes of data.
From 10.99.0.1 icmp_seq=1 Destination Host Unreachable

--- 10.99.0.9 ping statistics ---
1 packets transmitted, 0 received, +1 errors, 100% packet loss, time 0ms
"""


def test_ping_all_replies():
    r = parse_ping(PING_OK)
    assert (r.transmitted, r.received, r.loss_pct) == (3, 3, 0.0)
    assert (r.min_ms, r.avg_ms, r.max_ms, r.mdev_ms) == (0.052, 0.057, 0.061, 0.003)
    assert r.rtts_ms == {1: 0.061, 2: 0.052, 3: 0.058}


def test_ping_partial_loss_and_duplicates():
    r = parse_ping(PING_PARTIAL)
    assert (r.transmitted, r.received, r.loss_pct) == (4, 2, 50.0)
    assert r.rtts_ms == {1: 1.25, 3: 0.912}  # the (DUP!) reply does not replace the first one


@pytest.mark.parametrize("text", [PING_NONE, PING_ERRORS])
def test_ping_no_reply(text):
    r = parse_ping(text)
    assert r.received == 0 and r.loss_pct == 100.0
    assert r.min_ms is None and r.rtts_ms == {}


def test_ping_without_summary_is_an_error():
    with pytest.raises(CniprofError, match="ping printed no summary: ping: connect: Network is unreachable"):
        parse_ping("ping: connect: Network is unreachable\n")


def test_ping_command_line():
    assert Ping("a", "10.0.0.2", count=3).argv() == ["ping", "-n", "-c", "3", "-i", "0.2", "-W", "1", "10.0.0.2"]


def test_udp_burst_end_lines():
    assert parse_end('{"sent": 23, "bytes": 1472, "seconds": 0.02}\n', "sender")["sent"] == 23
    with pytest.raises(CniprofError, match="receiver failed: recv: Address already in use"):
        parse_end('{"error": "recv: Address already in use"}\n', "receiver")
    with pytest.raises(CniprofError, match="printed no result: ModuleNotFoundError: No module named 'cniprof'"):
        parse_end("", "sender", "Traceback (most recent call last):\nModuleNotFoundError: No module named 'cniprof'\n")


def test_udp_burst_argv_runs_this_module():
    g = UdpBurst("a", "b", "10.0.0.2", 23, payload_size=100, port=6000, src_port=41000)
    send = g.send_argv()
    assert send[1:3] == ["-m", "cniprof.traffic.udp_burst"] and send[3] == "send"
    assert send[send.index("--count") + 1] == "23" and send[send.index("--src-port") + 1] == "41000"
    assert g.recv_argv()[3] == "recv"


def test_udp_burst_local_ends_count_exactly():
    """The two ends on loopback of the test's own namespace (no root needed): N sent, N received."""
    with open_receiver(0, "127.0.0.1") as sock:
        port = sock.getsockname()[1]
        out: dict = {}
        counter = threading.Thread(target=lambda: out.update(count_datagrams(sock, 17, 10.0, lambda: False)))
        counter.start()
        sent = run_sender("127.0.0.1", port, 17, 200, 0.0005)
        counter.join(15)
    assert sent["sent"] == 17 and sent["bytes"] == 17 * 200
    assert out == {"received": 17, "bytes": 17 * 200}


def test_udp_burst_flows_argv_and_limits():
    assert "--flows" not in UdpBurst("a", "b", "10.0.0.2", 5).send_argv()  # one flow: the argv is unchanged
    send = UdpBurst("a", "b", "10.0.0.2", 50, flows=50).send_argv()
    assert send[send.index("--flows") + 1] == "50"
    for bad in ({"flows": 0}, {"flows": 5000}, {"flows": 10, "src_port": 65530}):
        with pytest.raises(CniprofError):
            UdpBurst("a", "b", "10.0.0.2", 5, **bad)


def test_udp_burst_flows_send_from_distinct_ports():
    """flows=N: datagram i leaves from the (i % N)-th socket, each with its own source port (its own flow)."""
    with open_receiver(0, "127.0.0.1") as sock:
        port = sock.getsockname()[1]
        sent = run_sender("127.0.0.1", port, 12, 10, 0.0, flows=4)
        sock.settimeout(2.0)
        sources = [sock.recvfrom(100)[1][1] for _ in range(12)]
    assert sent["sent"] == 12
    assert len(set(sources)) == 4 and sources[:4] == sources[4:8] == sources[8:]
