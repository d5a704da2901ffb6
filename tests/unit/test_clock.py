# SPDX-License-Identifier: Apache-2.0
"""The clock offset between two nodes from the packets both saw (cniprof/analysis/clock.py): identity hash,
records, matching, the minimum-delay estimator and its bound, on synthetic and recorded records."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from agents_data import recorded

from cniprof.analysis import clock

A, B = "node1", "node2"
CROSS = (clock.Crossing(0, A, B), clock.Crossing(1, B, A))


# --- identity ---------------------------------------------------------------------------------------------------


def _ipv4(src: bytes, dst: bytes, proto: int, ip_id: int, payload: bytes, frag: int = 0x4000) -> bytes:
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ip_id, frag, 64, proto, 0, src, dst) + payload


SRC, DST = bytes([10, 244, 1, 2]), bytes([10, 244, 2, 2])


def test_identity_is_pinned() -> None:
    """The hash is an ABI between two kernels' programs: a change must be deliberate (and rebuild both sides)."""
    key, ident = clock.identity("10.244.1.2", "10.244.2.2", 6, 4660, 40000, 5201, 123456789)
    assert (key, ident) == (0x62A3E7F8D6F71B0A, 0xD90B9672C25C7346)


def test_key_ignores_what_dnat_rewrites() -> None:
    k1, i1 = clock.identity("10.244.1.2", "10.96.0.10", 6, 7, 40000, 80, 99)
    k2, i2 = clock.identity("10.244.1.2", "10.244.2.2", 6, 7, 40000, 5201, 99)
    assert k1 == k2 and i1 != i2
    # and every other field counts
    base = clock.identity("10.244.1.2", "10.244.2.2", 6, 7, 40000, 80, 99)
    for changed in (("10.244.1.3", "10.244.2.2", 6, 7, 40000, 80, 99), ("10.244.1.2", "10.244.2.2", 17, 7, 40000,
                    80, 99), ("10.244.1.2", "10.244.2.2", 6, 8, 40000, 80, 99), ("10.244.1.2", "10.244.2.2", 6, 7,
                    40001, 80, 99), ("10.244.1.2", "10.244.2.2", 6, 7, 40000, 80, 100)):
        assert clock.identity(*changed)[0] != base[0]


def test_packet_identity_reads_through_vxlan() -> None:
    tcp = struct.pack("!HHIIBBHHH", 40000, 5201, 123456789, 0, 5 << 4, 0x10, 64240, 0, 0)
    inner = _ipv4(SRC, DST, 6, 4660, tcp)
    eth = b"\x02" * 12 + b"\x08\x00"
    for port in (4789, 8472):
        udp = struct.pack("!HHHH", 51234, port, 8 + 8 + len(eth) + len(inner), 0)
        outer = _ipv4(bytes([192, 168, 77, 1]), bytes([192, 168, 77, 2]), 17, 1, udp + b"\x08" + b"\0" * 7 + eth + inner)
        assert clock.packet_identity(outer) == clock.packet_identity(inner)
    assert clock.packet_identity(inner) == clock.identity("10.244.1.2", "10.244.2.2", 6, 4660, 40000, 5201, 123456789)
    # UDP to another port is not a tunnel: its own identity (no sequence)
    udp = struct.pack("!HHHH", 40000, 53, 12, 0) + b"abcd"
    assert clock.packet_identity(_ipv4(SRC, DST, 17, 9, udp)) == clock.identity("10.244.1.2", "10.244.2.2", 17, 9,
                                                                                 40000, 53)


def test_icmp_echo_and_fragments() -> None:
    echo = struct.pack("!BBHHH", 8, 0, 0, 0x1234, 17)
    assert clock.packet_identity(_ipv4(SRC, DST, 1, 5, echo)) == clock.identity("10.244.1.2", "10.244.2.2", 1, 5,
                                                                                  0x1234, 0, 17)
    unreachable = struct.pack("!BBHHH", 3, 3, 0, 0x1234, 17)
    assert clock.packet_identity(_ipv4(SRC, DST, 1, 5, unreachable)) == clock.identity("10.244.1.2", "10.244.2.2",
                                                                                         1, 5)
    later = _ipv4(SRC, DST, 17, 9, b"\x9c\x40\x00\x35....", frag=0x2000 | 185)  # not the first fragment: no L4
    assert clock.packet_identity(later) == clock.identity("10.244.1.2", "10.244.2.2", 17, 9)


# --- records ----------------------------------------------------------------------------------------------------


def _records(rows: list[tuple[int, int, int, int, int]]) -> np.ndarray:
    """(dir, kind, id, t_ns, span_ns) rows as hop records."""
    out = np.zeros(len(rows), clock.RECORD_DTYPE)
    for i, (d, kind, ident, t, span) in enumerate(rows):
        out[i] = (ident, t, span, d, kind, 0, 0)
    return out


def test_encode_decode_round_trip_with_the_test_offset() -> None:
    recs = _records([(0, clock.LAST, 7, 1_000_000, 10), (1, clock.FIRST, 8, 2_000_000, 0)])
    obj = clock.encode(recs.astype(clock.RECORD_DTYPE.newbyteorder("=")).tobytes(), offset_ns=-5_000)
    assert obj["format"] == "hop_record/1" and obj["count"] == 2
    back = clock.decode(obj)
    assert back["t_ns"].tolist() == [995_000, 1_995_000]
    assert back["id"].tolist() == [7, 8] and back["span_ns"].tolist() == [10, 0]
    assert clock.RECORD_DTYPE.itemsize == 32
    with pytest.raises(ValueError, match="unknown record format"):
        clock.decode({"format": "x", "data": ""})


# --- the estimator ----------------------------------------------------------------------------------------------


def _synthetic(theta_ns: float, n: int = 400, wmin_fwd: int = 3_000, wmin_bwd: int = 3_000, skew_ppm: float = 0.0,
               seed: int = 1) -> dict[str, np.ndarray]:
    """Packets both ways for 4 s: wire times = minimum + exponential noise; node B's clock = A's + theta(t)."""
    rng = np.random.default_rng(seed)
    recs: dict[str, list] = {A: [], B: []}
    t_a = np.sort(rng.uniform(1e9, 5e9, size=2 * n)).astype(np.int64)
    for i, t in enumerate(t_a):
        d = i % 2
        wire = (wmin_fwd if d == 0 else wmin_bwd) + int(rng.exponential(2_000))
        theta = theta_ns + skew_ppm * 1e-6 * (t - 3e9)
        ident = 1000 + i
        if d == 0:  # leaves A at t (A clock), reaches B at t + wire (B clock = A clock + theta)
            recs[A].append((0, clock.LAST, ident, t, 5_000))
            recs[B].append((0, clock.FIRST, ident, int(t + wire + theta), 0))
            recs[B].append((0, clock.END, ident, int(t + wire + theta) + 7_000, 7_000))
        else:  # leaves B at (t - wire) on A's clock
            recs[B].append((1, clock.LAST, ident, int(t - wire + theta), 4_000))
            recs[A].append((1, clock.FIRST, ident, int(t), 0))
            recs[A].append((1, clock.END, ident, int(t) + 6_000, 6_000))
    return {node: _records(rows) for node, rows in recs.items()}


@pytest.mark.parametrize("theta", [5_000_000, -5_000_000, 200_000, 0, 86_400 * 10**9])
def test_symmetric_minimum_delays_give_the_offset(theta: int) -> None:
    res = clock.solve(clock.frame(_synthetic(theta)), CROSS)
    assert res.ok and res.estimate.model == "constant"
    # the fastest of 400 packets each way is within a few ns of the wire's minimum
    assert abs(res.estimate.offset_ns - theta) <= 20
    assert res.estimate.uncertainty_ns == pytest.approx(3_000, abs=20)
    for t in res.directions:  # the wire times back, none negative
        assert t.wire.min() >= 3_000 - 20 and t.below_zero == 0
    # end to end: span on A + wire + span on B
    fwd = next(t for t in res.directions if t.crossing.dir == 0)
    assert fwd.e2e.min() == fwd.wire.min() + 5_000 + 7_000


def test_asymmetric_minimum_delays_stay_within_the_bound() -> None:
    """The fastest packet takes 2 us one way and 6 us the other: off by half the difference, inside the bound."""
    res = clock.solve(clock.frame(_synthetic(5_000_000, wmin_fwd=2_000, wmin_bwd=6_000)), CROSS)
    err = res.estimate.offset_ns - 5_000_000
    assert err == pytest.approx(-2_000, abs=20)
    assert abs(err) <= res.estimate.uncertainty_ns == pytest.approx(4_000, abs=20)
    # the corrected wire times are >= the bound: never a negative hop time
    assert all(t.wire.min() >= res.estimate.uncertainty_ns - 1 for t in res.directions)


def test_drift_is_fitted_as_a_line() -> None:
    res = clock.solve(clock.frame(_synthetic(1_000_000, n=2000, skew_ppm=50.0)), CROSS)
    est = res.estimate
    assert est.model == "linear" and est.windows >= 3
    assert est.skew_ppm == pytest.approx(50.0, abs=2.0)
    assert est.offset_ns == pytest.approx(1_000_000, abs=3_000)
    # without the line, a constant offset would be wrong by up to 100 us at the ends of the run
    for t in res.directions:
        assert t.wire.size + t.below_zero == len(t.matched)
        assert np.median(t.wire) == pytest.approx(3_000 + 2_000 * np.log(2), rel=0.5)


def test_one_direction_makes_the_offset_unknowable() -> None:
    recs = _synthetic(5_000_000)
    only_fwd = {n: r[r["dir"] == 0] for n, r in recs.items()}
    res = clock.solve(clock.frame(only_fwd), CROSS)
    assert not res.ok and res.directions == ()
    assert res.reason == ("the clock offset between node1 and node2 needs packets both ways, and none matched from "
                          "node2 to node1: trace traffic with replies (--traffic iperf3 or ping; udp sends one way, "
                          "none traces what already flows)")
    s = clock.summary(res, {0: "a→c", 1: "c→a"}, {A: {"sent": 3}})
    assert s["status"] == "unknown" and s["offset_ns"] is None and s["matched"] == {"a→c": 400, "c→a": 0}
    assert s["reason"] == res.reason


def test_unmatched_and_duplicate_ids_are_counted() -> None:
    recs = _synthetic(0, n=50)
    a = recs[A]
    lost_on_wire = _records([(0, clock.LAST, 99_999, 2_000_000_000, 1)])
    dup = a[(a["dir"] == 0) & (a["kind"] == clock.LAST)][:1]
    res = clock.solve(clock.frame({A: np.concatenate([a, lost_on_wire, dup]), B: recs[B]}), CROSS)
    m = res.matched[0]
    assert (m.unmatched_src, m.unmatched_dst, m.ambiguous) == (1, 1, 2)
    assert len(m) == 49


# --- a recorded run: +5 ms on node2's clock -------------------------------------------------------------------------


def test_recorded_offset_is_recovered_within_5us() -> None:
    rec = recorded()
    recs = {n: clock.decode(v["records"]) for n, v in rec["nodes"].items()}
    res = clock.solve(clock.frame(recs), [clock.Crossing(**c) for c in rec["crossings"]])
    assert rec["offset_ns"] == 5_000_000
    assert abs(res.estimate.offset_ns - 5_000_000) <= 5_000
    assert abs(res.estimate.offset_ns - 5_000_000) <= res.estimate.uncertainty_ns
    assert [len(m) for m in res.matched.values()] == [300, 300]
    assert all(t.below_zero == 0 and t.wire.min() >= 0 for t in res.directions)
