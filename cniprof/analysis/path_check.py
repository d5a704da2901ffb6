# SPDX-License-Identifier: Apache-2.0
"""Observed path vs the model's: did the packets take exactly the chain the CNI model says they take?

Why: every per-hop number assumes the lab (or the node) is wired the way the model says. A wrong route, a missing
neighbour entry or a model that is simply wrong still produces plausible latencies, so the run must say when the
kernel's path differs from the model's. The kernel already tells us everything needed: expected pairs carry their
count, and every other pair a tracked packet made is in the snapshot with its count (expected=false).

Pure function of a labelled snapshot (ARCHITECTURE.md). Per direction it reports
- missing hops: expected hops inside the end-to-end path that no packet crossed (while the direction had traffic);
- unexpected hops: observed pairs in no chain, with counts, and how they relate to the chain (skipping expected
  points, going back to an earlier point, leaving or rejoining the path, or wholly off it);
- where packets ended: a point other than the path's end where more packets arrived than left. Off the path, that
  is a packet that left the expected path; on it, a packet that stopped early (a drop, listed with its reasons, or
  a tracking loss). Only the former makes the check fail: drops are the drops table's business.
Hops after the path's end (socket delivery) are not required: UDP delivery is not observable (KNOWN_ISSUES.md).

Proportions: an unexpected pair or an end off the path that holds less than NEGLIGIBLE_SHARE of its direction's
packets is listed as negligible and does not make the check fail (see NEGLIGIBLE_SHARE for why). Missing hops
always do: no packet at all crossed an expected hop of a direction that had traffic.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from cniprof.analysis.hops import direction_label, directions, point_name

# A tracker keyed by skb address is misled, rarely, by an address that comes back as another packet right after
# a free the kernel does not report (TCP receive coalescing, GRO merges free skbs without a tracepoint; under an
# 8-stream iperf3 load most data segments end that way): the new packet may pass a point before the probe knows
# the old one is gone, which shows as one stray pair. A 5-minute trace had 1 such pair among 1.4 million packets
# (issue 11). A real difference between the model and the kernel's path (a route, a neighbour, a device) moves
# every packet of a flow, or at least a visible share of them; 1 in 1000 separates the two by orders of magnitude.
NEGLIGIBLE_SHARE = 0.001
NEGLIGIBLE_REASON = (f"below {NEGLIGIBLE_SHARE * 100:g} % of the direction's packets: what a tracker keyed by skb address "
                     "mistakes when an address is reused after a free without a tracepoint; a real path difference "
                     "moves a visible share")

MISSING = "missing"
SKIPS = "skips expected points"
GOES_BACK = "goes back along the path"
LEAVES = "leaves the path"
REJOINS = "rejoins the path"
OFF = "off the path"


@dataclass(frozen=True)
class HopIssue:
    """A missing expected hop (count 0, with its seq and role) or an unexpected observed pair (with its kind)."""

    direction: str
    kind: str
    src: str  # point names, e.g. "node1 cni0 receive"
    dst: str
    count: int
    seq: int | None = None
    role: str = ""
    negligible: bool = False  # below NEGLIGIBLE_SHARE of the direction's packets

    def line(self) -> str:
        if self.kind == MISSING:
            return f"{self.direction}: missing hop {self.seq} {self.role!r} {self.src} → {self.dst} (0 packets)"
        return (f"{self.direction}: unexpected hop {self.src} → {self.dst}: {self.count} packets ({self.kind})"
                + (", negligible" if self.negligible else ""))


@dataclass(frozen=True)
class Ended:
    """Packets of a direction whose last seen point was `point`, which is not where the path ends."""

    direction: str
    point: str
    count: int
    on_path: bool
    drops: tuple[tuple[str, int], ...] = ()  # (reason, count) recorded at this point
    other: tuple[tuple[str, int], ...] = ()  # other ends recorded at this point: (freed|unseen|lost|stale|in flight, n)
    negligible: bool = False  # off the path, below NEGLIGIBLE_SHARE of the direction's packets

    def line(self) -> str:
        where = "before the path's end" if self.on_path else "off the path"
        why = ", ".join(f"{r} {n}" for r, n in self.drops)
        also = ", ".join(f"{k} {n}" for k, n in self.other)
        detail = "; ".join(x for x in (f"dropped: {why}" if why else "", also) if x)
        return (f"{self.direction}: {self.count} packets ended at {self.point}, {where}"
                + (f" ({detail})" if detail else "") + (", negligible" if self.negligible else ""))


@dataclass(frozen=True)
class DirectionCheck:
    direction: str
    hops: int  # expected hops inside the end-to-end path
    started: int  # packets that left the first point (along the chain or not)
    completed: int  # packets that reached the path's end (end-to-end count)
    missing: tuple[HopIssue, ...] = ()
    unexpected: tuple[HopIssue, ...] = ()
    ended: tuple[Ended, ...] = ()

    @property
    def active(self) -> bool:
        return self.started > 0 or self.completed > 0 or bool(self.unexpected)

    @property
    def ok(self) -> bool:
        return (not self.missing and all(h.negligible for h in self.unexpected)
                and all(e.on_path or e.negligible for e in self.ended))

    @property
    def negligible(self) -> int:
        """Packets in unexpected pairs and off-path ends too few to fail the check."""
        return (sum(h.count for h in self.unexpected if h.negligible)
                + sum(e.count for e in self.ended if not e.on_path and e.negligible))


@dataclass(frozen=True)
class PathCheck:
    directions: tuple[DirectionCheck, ...]
    unassigned: tuple[HopIssue, ...] = field(default=())  # unexpected pairs no direction's packets reach

    @property
    def ok(self) -> bool:
        return all(d.ok for d in self.directions) and all(h.negligible for h in self.unassigned)

    @property
    def negligible(self) -> int:
        return sum(d.negligible for d in self.directions) + sum(h.count for h in self.unassigned if h.negligible)

    @property
    def missing(self) -> tuple[HopIssue, ...]:
        return tuple(h for d in self.directions for h in d.missing)

    @property
    def unexpected(self) -> tuple[HopIssue, ...]:
        return tuple(h for d in self.directions for h in d.unexpected) + self.unassigned

    @property
    def left_path(self) -> tuple[Ended, ...]:
        return tuple(e for d in self.directions for e in d.ended if not e.on_path)

    def lines(self) -> list[str]:
        """A headline, then one line per finding (what the final table prints under itself)."""
        summary = "; ".join(
            f"{d.direction}: {d.hops} hops, {d.completed}/{d.started} packets end to end" if d.active
            else f"{d.direction}: no traffic" for d in self.directions
        )
        if self.ok:
            out = [f"path check: observed chain = expected ({summary})"]
        else:
            out = [f"path check: MISMATCH with the model's chain ({summary})"]
        if self.negligible:
            n = self.negligible
            out.append(f"  {n} packet{'' if n == 1 else 's'} off the chain {'is' if n == 1 else 'are'} negligible: "
                       f"{NEGLIGIBLE_REASON}")
        for d in self.directions:
            out += [f"  {h.line()}" for h in (*d.missing, *d.unexpected)]
            out += [f"  {e.line()}" for e in d.ended]
        out += [f"  {h.line()}" for h in self.unassigned]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "negligible_share": NEGLIGIBLE_SHARE,
            "negligible_reason": NEGLIGIBLE_REASON,
            "negligible_packets": self.negligible,
            "directions": [
                {**asdict(d), "active": d.active, "ok": d.ok} for d in self.directions
            ],
            "unassigned": [asdict(h) for h in self.unassigned],
        }


def _id(ref: Any) -> int:
    return int(ref["id"]) if isinstance(ref, Mapping) else int(ref)


def check(snapshot: Mapping[str, Any]) -> PathCheck:
    """Compare the observed pairs of a labelled snapshot with its expected chains (see the module docstring)."""
    by_id = {int(p["id"]): p for p in snapshot.get("points") or ()}

    def name(pid: int) -> str:
        return point_name(by_id[pid]) if pid in by_id else f"point {pid}"

    hops = list(snapshot.get("hops") or ())
    expected = [h for h in hops if h.get("expected")]
    odd: dict[tuple[int, int], int] = defaultdict(int)
    for h in hops:
        if not h.get("expected") and int(h.get("count", 0)):
            odd[(_id(h["from"]), _id(h["to"]))] += int(h["count"])
    e2e = {int(e["dir"]): int(e.get("count", 0)) for e in snapshot.get("e2e") or ()}
    drops: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for dr in snapshot.get("drops") or ():
        drops[_id(dr["point"])].append((str(dr.get("reason_name") or dr.get("reason")), int(dr.get("count", 0))))
    other: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for e in snapshot.get("ends") or ():
        other[_id(e["point"])].append((str(e["kind"]), int(e.get("count", 0))))
    for lv in snapshot.get("live") or ():
        for kind, label in (("stale", "stale"), ("in_flight", "in flight")):
            if int(lv.get(kind, 0)):
                other[_id(lv["point"])].append((label, int(lv[kind])))

    dirs = directions(snapshot)
    chains: dict[int, list[Mapping[str, Any]]] = {}
    order: dict[int, list[int]] = {}  # direction -> its points in path order
    for d in dirs:
        mine = sorted((h for h in expected if int(h.get("dir", -1)) == int(d["dir"])), key=lambda h: int(h["seq"]))
        chains[int(d["dir"])] = mine
        pts: list[int] = []
        for h in mine:
            for pid in (_id(h["from"]), _id(h["to"])):
                if pid not in pts:
                    pts.append(pid)
        order[int(d["dir"])] = pts

    owner = _assign(odd, order)
    results = []
    for d in dirs:
        k = int(d["dir"])
        label = direction_label(d)
        mine = chains[k]
        pos = {pid: i for i, pid in enumerate(order[k])}
        in_e2e = [h for h in mine if h.get("in_e2e", True)]
        end = _id(in_e2e[-1]["to"]) if in_e2e else None
        after_end = {_id(h["to"]) for h in mine if not h.get("in_e2e", True)}
        first = order[k][0] if order[k] else None
        my_odd = {key: n for key, n in odd.items() if owner.get(key) == k}

        started = sum(int(h.get("count", 0)) for h in mine if _id(h["from"]) == first)
        started += sum(n for (a, _), n in my_odd.items() if a == first)
        unexpected = tuple(
            HopIssue(label, _kind(order[k], a, b, name), name(a), name(b), n,
                     negligible=_negligible(n, started))
            for (a, b), n in sorted(my_odd.items(), key=lambda kv: (-kv[1], kv[0]))
        )
        completed = e2e.get(k, 0)
        active = started > 0 or completed > 0 or bool(unexpected)
        missing = tuple(
            HopIssue(label, MISSING, name(_id(h["from"])), name(_id(h["to"])), 0, int(h["seq"]), str(h.get("role", "")))
            for h in in_e2e if active and int(h.get("count", 0)) == 0
        )
        flow_in: dict[int, int] = defaultdict(int)
        flow_out: dict[int, int] = defaultdict(int)
        for h in mine:
            flow_in[_id(h["to"])] += int(h.get("count", 0))
            flow_out[_id(h["from"])] += int(h.get("count", 0))
        for (a, b), n in my_odd.items():
            flow_in[b] += n
            flow_out[a] += n
        ended = tuple(
            Ended(label, name(pid), flow_in[pid] - flow_out[pid], pid in pos, tuple(drops.get(pid, ())),
                  tuple(other.get(pid, ())), negligible=_negligible(flow_in[pid] - flow_out[pid], started))
            for pid in sorted(flow_in, key=lambda p: (pos.get(p, len(pos)), p))
            if pid not in (first, end) and pid not in after_end and flow_in[pid] > flow_out[pid]
        )
        results.append(DirectionCheck(label, len(in_e2e), started, completed, missing, unexpected, ended))
    total = sum(d.started for d in results)
    unassigned = tuple(
        HopIssue("unassigned", OFF, name(a), name(b), n, negligible=_negligible(n, total))
        for (a, b), n in sorted(odd.items()) if (a, b) not in owner
    )
    return PathCheck(tuple(results), unassigned)


def _negligible(count: int, started: int) -> bool:
    """A share of the direction's packets too small to be a path difference (NEGLIGIBLE_SHARE)."""
    return started > 0 and count < NEGLIGIBLE_SHARE * started


def _assign(odd: Mapping[tuple[int, int], int], order: Mapping[int, list[int]]) -> dict[tuple[int, int], int]:
    """Which direction's packets made each unexpected pair: the first direction whose path (extended by pairs
    already assigned to it) contains the pair's start point; failing that, the first whose path has its end."""
    reach = {k: set(pts) for k, pts in order.items()}
    owner: dict[tuple[int, int], int] = {}
    changed = True
    while changed:
        changed = False
        for key in odd:
            if key in owner:
                continue
            k = next((k for k in order if key[0] in reach[k]), None)
            if k is not None:
                owner[key] = k
                reach[k].add(key[1])
                changed = True
    for key in odd:
        if key not in owner:
            k = next((k for k in order if key[1] in order[k]), None)
            if k is not None:
                owner[key] = k
    return owner


def _kind(path: list[int], a: int, b: int, name: Callable[[int], str]) -> str:
    """How an unexpected pair relates to the direction's path (points in order); a skip names what it skipped."""
    pos = {pid: i for i, pid in enumerate(path)}
    if a in pos and b in pos:
        if pos[b] > pos[a]:
            return f"{SKIPS}: " + ", ".join(name(p) for p in path[pos[a] + 1:pos[b]])
        return GOES_BACK
    if a in pos:
        return LEAVES
    if b in pos:
        return REJOINS
    return OFF
