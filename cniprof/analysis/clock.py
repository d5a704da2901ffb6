# SPDX-License-Identifier: Apache-2.0
"""Packets seen by two kernels: the records node agents send, their matching, and the clock offset between nodes.

Pure functions over plain data (numpy arrays of `hop_record/1`, see ARCHITECTURE.md "Node agents"), so recorded
runs can be re-analysed and the estimator is unit-tested on recorded and synthetic records.

Two clocks are never subtracted without an estimated offset and its bound. For a pair of nodes A and B, with
theta = clock(B) - clock(A), a packet A -> B gives d = t_first(B) - t_last(A) = w + theta and a packet B -> A gives
e = t_first(A) - t_last(B) = w' - theta, with wire times w, w' >= 0. Causality alone says -min(e) <= theta <=
min(d): the midpoint theta_hat = (min d - min e) / 2 is off by at most U = (min d + min e) / 2 (minimum-delay
filtering, the NTP idea), and the corrected wire times d - theta_hat and e + theta_hat are then >= U >= 0.
When the clocks drift apart during the run, the same bounds per time window stop sharing a common point; the
offset is then a line through the windows' midpoints (skew), and the bound grows by the line's misfit.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import lazy_loader
import numpy as np

if TYPE_CHECKING:
    import pandas as pd
else:  # imported on first use: trace imports this module (through the coordinator) before it attaches
    pd = lazy_loader.load("pandas")

# struct hop_record of bpf/hops.h, as the agent protocol carries it (little-endian)
RECORD_DTYPE = np.dtype([("id", "<u8"), ("t_ns", "<u8"), ("span_ns", "<u8"), ("dir", "<u4"), ("kind", "u1"),
                         ("point", "u1"), ("reserved", "<u2")])
RECORD_FORMAT = "hop_record/1"
KINDS = {1: "last", 2: "first", 3: "end"}
LAST, FIRST, END = 1, 2, 3
VXLAN_PORTS = (4789, 8472)

WINDOW_NS = 1_000_000_000  # drift check: offset bounds per window of this length
MIN_PER_WINDOW = 8  # matched packets each way for a window to count
M64 = (1 << 64) - 1


# --- the identity hash (mirror of identify() in bpf/hops.bpf.c) ------------------------------------------------


def mix64(x: int) -> int:
    """The splitmix64 finalizer, in u64 arithmetic."""
    x &= M64
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & M64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & M64
    x ^= x >> 31
    return x


def identity(saddr: str, daddr: str, proto: int, ip_id: int, sport: int = 0, dport: int = 0,
             seq: int = 0) -> tuple[int, int]:
    """(key, id) of a packet: key (the sampling hash) leaves out daddr and dport, which DNAT rewrites; id is
    what records carry. ICMP echo: sport = echo id, seq = echo sequence; UDP: seq 0; a non-first fragment: 0s."""
    s, d = int(ipaddress.IPv4Address(saddr)), int(ipaddress.IPv4Address(daddr))
    key = mix64(((s << 32) | ((ip_id & 0xFFFF) << 16) | (proto & 0xFF)) ^ mix64(((sport & 0xFFFF) << 32) | (seq & 0xFFFFFFFF)))
    return key, mix64(key ^ ((d << 32) | (dport & 0xFFFF)))


def packet_identity(packet: bytes) -> tuple[int, int]:
    """identity() of an IPv4 packet as the kernel program reads it, through a VXLAN encapsulation."""
    ihl = (packet[0] & 15) * 4
    if packet[0] >> 4 != 4:
        raise ValueError("not an IPv4 packet")
    frag = int.from_bytes(packet[6:8], "big") & 0x1FFF
    if packet[9] == 17 and not frag and int.from_bytes(packet[ihl + 2:ihl + 4], "big") in VXLAN_PORTS:
        inner = packet[ihl + 16:]
        if inner[12:14] != b"\x08\x00":
            raise ValueError("VXLAN payload is not IPv4")
        return packet_identity(inner[14:])
    proto, l4 = packet[9], packet[ihl:ihl + 8]
    sport = dport = seq = 0
    if not frag and proto == 1 and l4[0] in (0, 8):
        sport, seq = int.from_bytes(l4[4:6], "big"), int.from_bytes(l4[6:8], "big")
    elif not frag and proto in (6, 17):
        sport, dport = int.from_bytes(l4[0:2], "big"), int.from_bytes(l4[2:4], "big")
        seq = int.from_bytes(l4[4:8], "big") if proto == 6 else 0
    return identity(str(ipaddress.IPv4Address(packet[12:16])), str(ipaddress.IPv4Address(packet[16:20])), proto,
                    int.from_bytes(packet[4:6], "big"), sport, dport, seq)


# --- records on the wire of the agent protocol ------------------------------------------------------------------


def encode(raw: bytes, offset_ns: int = 0) -> dict[str, Any]:
    """The `records` object of a snapshot reply from ring-buffer bytes in host order; offset_ns: TEST ONLY."""
    native = np.frombuffer(raw, dtype=RECORD_DTYPE.newbyteorder("="))
    recs = native.astype(RECORD_DTYPE)
    if offset_ns and len(recs):
        recs["t_ns"] = (recs["t_ns"].astype(np.int64) + np.int64(offset_ns)).astype(np.uint64)
    return {"format": RECORD_FORMAT, "count": len(recs), "data": base64.b64encode(recs.tobytes()).decode()}


def decode(obj: Mapping[str, Any]) -> np.ndarray:
    """The records of a snapshot reply as a structured array (RECORD_DTYPE)."""
    if obj.get("format") != RECORD_FORMAT:
        raise ValueError(f"unknown record format {obj.get('format')!r}; expected {RECORD_FORMAT}")
    recs = np.frombuffer(base64.b64decode(obj.get("data") or ""), dtype=RECORD_DTYPE)
    if len(recs) != int(obj.get("count", len(recs))):
        raise ValueError(f"{len(recs)} records where {obj.get('count')} were announced")
    return recs


def frame(records: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """node -> records arrays as one table: node, dir, kind, id, t_ns, span_ns (int64 times)."""
    parts = []
    for node, recs in records.items():
        if len(recs):
            parts.append(pd.DataFrame({"node": node, "dir": recs["dir"].astype(np.int64),
                                       "kind": recs["kind"].astype(np.int64), "point": recs["point"].astype(np.int64),
                                       "id": recs["id"], "t_ns": recs["t_ns"].astype(np.int64),
                                       "span_ns": recs["span_ns"].astype(np.int64)}))
    if not parts:
        return pd.DataFrame({"node": pd.Series(dtype=object), **{c: pd.Series(dtype=np.int64) for c in
                             ("dir", "kind", "point")}, "id": pd.Series(dtype=np.uint64),
                             **{c: pd.Series(dtype=np.int64) for c in ("t_ns", "span_ns")}})
    return pd.concat(parts, ignore_index=True)


# --- matching ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Crossing:
    """A direction between two nodes: its source node (records "last") and destination node ("first", "end")."""

    dir: int
    src_node: str
    dst_node: str


@dataclass(frozen=True)
class Matched:
    """One direction's packets seen on both nodes (raw times, each on its own node's clock)."""

    crossing: Crossing
    t_last: np.ndarray  # source clock
    span_src: np.ndarray  # first point -> last point on the source node
    t_first: np.ndarray  # destination clock
    span_dst: np.ndarray  # first point -> path end on the destination node; -1 when no "end" record arrived
    last_point: int | None  # the source node's last point (its local id), None without records
    first_point: int | None
    unmatched_src: int  # "last" records with no "first" on the destination
    unmatched_dst: int
    ambiguous: int  # ids seen more than once on one side (left out)

    @property
    def raw_delay(self) -> np.ndarray:
        return self.t_first - self.t_last

    def __len__(self) -> int:
        return len(self.t_last)


def _unique(df: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    dup = df["id"].duplicated(keep=False)
    return df[~dup], int(dup.sum())


def match(records: pd.DataFrame, crossing: Crossing) -> Matched:
    """Join the source node's "last" records with the destination's "first" (and "end") records by identity."""
    d = records[records["dir"] == crossing.dir]
    last, a1 = _unique(d[(d["node"] == crossing.src_node) & (d["kind"] == LAST)])
    first, a2 = _unique(d[(d["node"] == crossing.dst_node) & (d["kind"] == FIRST)])
    end, _ = _unique(d[(d["node"] == crossing.dst_node) & (d["kind"] == END)])
    m = last[["id", "t_ns", "span_ns", "point"]].merge(first[["id", "t_ns", "point"]], on="id",
                                                       suffixes=("_l", "_f"))
    m = m.merge(end[["id", "span_ns"]].rename(columns={"span_ns": "span_e"}), on="id", how="left")
    m = m.sort_values("t_ns_l", kind="stable")
    return Matched(
        crossing,
        m["t_ns_l"].to_numpy(np.int64),
        m["span_ns"].to_numpy(np.int64),
        m["t_ns_f"].to_numpy(np.int64),
        m["span_e"].fillna(-1).to_numpy(np.int64),
        int(last["point"].mode().iloc[0]) if len(last) else None,
        int(first["point"].mode().iloc[0]) if len(first) else None,
        len(last) - len(m),
        len(first) - len(m),
        a1 + a2,
    )


# --- the offset -------------------------------------------------------------------------------------------------


class OffsetUnknown(ValueError):
    """No packet matched in one direction: the offset between the two clocks cannot be known."""


@dataclass(frozen=True)
class ClockEstimate:
    """theta(t) = clock(B) - clock(A) = offset_ns + skew_ppm * 1e-6 * (t - t_ref_ns), t on A's clock; the true
    offset is within uncertainty_ns of it (a bound from causality, not a standard error)."""

    offset_ns: float
    uncertainty_ns: float
    skew_ppm: float
    model: str  # "constant" | "linear"
    t_ref_ns: int
    min_fwd_ns: int  # min d (A -> B, raw)
    min_bwd_ns: int  # min e (B -> A, raw)
    windows: int  # windows with enough matches each way (the drift check)

    def at(self, t_a_ns: np.ndarray) -> np.ndarray:
        t = np.asarray(t_a_ns, dtype=np.int64)
        return self.offset_ns + self.skew_ppm * 1e-6 * (t - self.t_ref_ns).astype(np.float64)


def _window_bounds(t_f: np.ndarray, d: np.ndarray, t_b: np.ndarray, e: np.ndarray, t0: int,
                   window_ns: int) -> list[tuple[float, float, float]]:
    """(center time, lo, hi) of each window with MIN_PER_WINDOW matches each way: lo = -min e, hi = min d."""
    kf, kb = (t_f - t0) // window_ns, (t_b - t0) // window_ns
    out = []
    for k in sorted(set(kf.tolist()) & set(kb.tolist())):
        df, eb = d[kf == k], e[kb == k]
        if len(df) >= MIN_PER_WINDOW and len(eb) >= MIN_PER_WINDOW:
            center = float(np.concatenate([t_f[kf == k], t_b[kb == k]]).mean())
            out.append((center, float(-eb.min()), float(df.min())))
    return out


def estimate(t_fwd: np.ndarray, d: np.ndarray, t_bwd: np.ndarray, e: np.ndarray,
             window_ns: int = WINDOW_NS) -> ClockEstimate:
    """The offset from forward delays d (A -> B, at A-clock times t_fwd) and backward delays e (B -> A, at A-clock
    times t_bwd). Raises OffsetUnknown when either direction is empty."""
    d, e = np.asarray(d, dtype=np.int64), np.asarray(e, dtype=np.int64)
    t_fwd, t_bwd = np.asarray(t_fwd, dtype=np.int64), np.asarray(t_bwd, dtype=np.int64)
    if not len(d) or not len(e):
        raise OffsetUnknown("forward" if not len(d) else "backward")
    t0 = int(min(t_fwd.min(), t_bwd.min()))
    t1 = int(max(t_fwd.max(), t_bwd.max()))
    t_ref = t0 + (t1 - t0) // 2
    min_d, min_e = int(d.min()), int(e.min())
    theta = (min_d - min_e) / 2.0
    bound = (min_d + min_e) / 2.0
    wins = _window_bounds(t_fwd, d, t_bwd, e, t0, window_ns)
    consistent = all(lo <= theta <= hi for _, lo, hi in wins) and bound >= 0
    if consistent or len(wins) < 2:
        return ClockEstimate(theta, max(bound, 0.0), 0.0, "constant", t_ref, min_d, min_e, len(wins))
    # the clocks ran at different rates: a line through the windows' midpoints, its bound per window
    tc = np.array([w[0] for w in wins]) - t_ref
    mid = np.array([(w[1] + w[2]) / 2 for w in wins])
    half = np.array([(w[2] - w[1]) / 2 for w in wins])
    slope, intercept = np.polyfit(tc, mid, 1)
    misfit = np.abs(intercept + slope * tc - mid)
    return ClockEstimate(float(intercept), float(np.max(np.abs(half) + misfit)), float(slope * 1e6), "linear",
                         t_ref, min_d, min_e, len(wins))


# --- one pair of nodes: offset, wire times, end-to-end ------------------------------------------------------------


@dataclass(frozen=True)
class DirectionTimes:
    """Corrected per-packet times of one direction (ns), only values that are measurements (>= 0)."""

    crossing: Crossing
    wire: np.ndarray
    e2e: np.ndarray  # span(last) + wire + span(end), packets with all three records
    below_zero: int  # corrected wire times < 0 (only possible with drift): left out, counted
    matched: Matched


@dataclass(frozen=True)
class ClockResult:
    """The offset between two nodes and what it makes measurable; estimate None when it is unknowable."""

    nodes: tuple[str, str]
    estimate: ClockEstimate | None
    directions: tuple[DirectionTimes, ...]
    reason: str = ""
    matched: Mapping[int, Matched] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.estimate is not None


def unknown_reason(a: str, b: str, empty: Sequence[str]) -> str:
    """The one line a user gets when one direction has no matched packet."""
    ways = " and ".join(empty)
    return (f"the clock offset between {a} and {b} needs packets both ways, and none matched {ways}: trace "
            f"traffic with replies (--traffic iperf3 or ping; udp sends one way, none traces what already flows)")


def solve(records: pd.DataFrame, crossings: Sequence[Crossing], window_ns: int = WINDOW_NS) -> ClockResult:
    """Match every crossing, estimate clock(B) - clock(A) for the pair (A = the first crossing's source), correct
    each direction's wire and end-to-end times. Supports exactly one pair of nodes (both directions)."""
    if not crossings:
        raise ValueError("no crossing between nodes to match")
    a, b = crossings[0].src_node, crossings[0].dst_node
    if any({c.src_node, c.dst_node} != {a, b} for c in crossings):
        raise ValueError("node agents estimate the offset of one pair of nodes per run")
    matched = {c.dir: match(records, c) for c in crossings}
    fwd = [m for m in matched.values() if m.crossing.src_node == a and len(m)]
    bwd = [m for m in matched.values() if m.crossing.src_node == b and len(m)]
    if not fwd or not bwd:
        empty = [f"from {a} to {b}"] * (not fwd) + [f"from {b} to {a}"] * (not bwd)
        return ClockResult((a, b), None, (), unknown_reason(a, b, empty), matched)
    # all times on A's clock: forward packets left A at t_last; backward packets reached A at t_first
    t_f = np.concatenate([m.t_last for m in fwd])
    d = np.concatenate([m.raw_delay for m in fwd])
    t_b = np.concatenate([m.t_first for m in bwd])
    e = np.concatenate([m.raw_delay for m in bwd])
    est = estimate(t_f, d, t_b, e, window_ns)
    out = []
    for m in matched.values():
        if m.crossing.src_node == a:
            wire = m.raw_delay - est.at(m.t_last)
        else:
            wire = m.raw_delay + est.at(m.t_first)
        # a float offset: round to whole ns, as the kernel's times are
        wire = np.rint(wire).astype(np.int64)
        ok = wire >= 0
        has_end = ok & (m.span_dst >= 0)
        e2e = m.span_src[has_end] + wire[has_end] + m.span_dst[has_end]
        out.append(DirectionTimes(m.crossing, wire[ok], e2e, int((~ok).sum()), m))
    return ClockResult((a, b), est, tuple(out), "", matched)


def summary(result: ClockResult, labels: Mapping[int, str], records_total: Mapping[str, Mapping[str, int]]
            ) -> dict[str, Any]:
    """The `clock` block of summary.json (ARCHITECTURE.md "Node agents")."""
    est = result.estimate
    by_dir = {t.crossing.dir: t for t in result.directions}

    def lab(d: int) -> str:
        return labels.get(d, str(d))

    out: dict[str, Any] = {
        "status": "ok" if est is not None else "unknown",
        "nodes": list(result.nodes),
        "offset_ns": None if est is None else round(est.offset_ns, 1),
        "uncertainty_ns": None if est is None else round(est.uncertainty_ns, 1),
        "skew_ppm": None if est is None else round(est.skew_ppm, 4),
        "model": None if est is None else est.model,
        "windows": None if est is None else est.windows,
        "matched": {lab(d): len(m) for d, m in result.matched.items()},
        "unmatched": {lab(d): {"src": m.unmatched_src, "dst": m.unmatched_dst}
                      for d, m in result.matched.items()},
        "ambiguous": {lab(d): m.ambiguous for d, m in result.matched.items()},
        "min_delay_ns": {lab(d): (int(m.raw_delay.min()) if len(m) else None) for d, m in result.matched.items()},
        "below_zero": {lab(d): t.below_zero for d, t in by_dir.items()},
        "records": {node: dict(v) for node, v in records_total.items()},
    }
    if est is None:
        out["reason"] = result.reason
    return out
