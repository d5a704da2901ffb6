# SPDX-License-Identifier: Apache-2.0
"""Where every tracked packet went: the accounting of a snapshot, category by category, adding up to `started`.

The hop probe counts each started packet's end exactly once (bpf/hops.bpf.c: slots change hands by compare-and-swap,
the CPU that swaps a packet out counts its end) and the final snapshot is one consistent cut (the probe is frozen
for it), so for a final snapshot

    started = delivered (copied + freed after the path's end + ended there) + dropped + freed + unseen + lost
              + stale + in flight

exactly; `unexplained` is what is left, 0 unless the snapshot was read while packets moved (a live view) or was
recorded by an older probe that did not count every end. Categories:

- delivered: copied to the reading socket (TCP); freed after the path's end: a UDP read, a TCP segment coalesced
  into the previous one in the receive queue (tcp_try_coalesce), a pure ACK processed (the kernel frees those
  without a tracepoint, and the probe recognises it when the skb address comes back as another packet), consumed
  there, or not seen for stale_ms after it (no drop was reported: it reached the socket layer, maybe still queued);
  or ended at the path's end (ICMP, whose reader may get a raw-socket clone).
- dropped: kfree_skb with a reason, at the last point the packet passed (the drops table).
- freed: consume_skb before the path's end (e.g. a GRO frag_list member freed with its aggregate).
- unseen: freed without a tracepoint before the path's end (e.g. its head merged by GRO), recognised the same way.
- lost: its tracking slot was taken by another packet while it was fresh (a hash clash in the table).
- stale: not seen for stale_ms before the path's end: counted when its slot or address came back, or still in the
  table at the snapshot.
- in flight: still in the table at the snapshot, seen within stale_ms.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cniprof.analysis.hops import point_name

CATEGORIES = ("delivered", "dropped", "freed", "unseen", "lost", "stale", "in_flight")
MEANING = {
    "delivered": "copied to the reader, freed after the path's end (UDP read, TCP coalescing, ACK), or ended "
                 "there (ICMP)",
    "dropped": "kfree_skb with a reason, at the last point passed",
    "freed": "consume_skb before the path's end",
    "unseen": "freed without a tracepoint before the path's end (GRO merge ...)",
    "lost": "tracking slot taken by another packet (hash clash)",
    "stale": "not seen for stale_ms",
    "in_flight": "still tracked at the snapshot",
}


@dataclass(frozen=True)
class Accounting:
    started: int
    copied: int
    path_end: int
    freed_after_end: int  # delivered, then freed (without a tracepoint: a UDP read, TCP coalescing; or consumed)
    dropped: int
    freed: int
    unseen: int
    lost: int
    stale: int
    in_flight: int
    where: Mapping[str, tuple[tuple[str, int], ...]]  # category -> (point name, count), most first
    complete: bool  # the snapshot counts every end (a probe with in-flight and unseen counters)

    @property
    def delivered(self) -> int:
        return self.copied + self.freed_after_end + self.path_end

    @property
    def accounted(self) -> int:
        return sum(self.category(c) for c in CATEGORIES)

    @property
    def unexplained(self) -> int:
        return self.started - self.accounted

    def category(self, name: str) -> int:
        return int(getattr(self, name))

    def share(self, name: str) -> float:
        return self.category(name) / self.started if self.started else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "categories": {c: self.category(c) for c in CATEGORIES},
            "delivered": {"copied": self.copied, "freed_after_end": self.freed_after_end, "path_end": self.path_end},
            "unexplained": self.unexplained,
            "complete": self.complete,
            "where": {c: [{"point": p, "count": n} for p, n in rows] for c, rows in self.where.items() if rows},
        }


def accounting(snapshot: Mapping[str, Any]) -> Accounting:
    """The accounting of one snapshot (see the module docstring); pure."""
    c = {k: int(v) for k, v in (snapshot.get("counters") or {}).items()}
    points = {int(p["id"]): p for p in snapshot.get("points") or ()}
    ends_at = {pid for pid, p in points.items() if p.get("end")}

    def name(pid: int) -> str:
        return point_name(points[pid]) if pid in points else f"point {pid}"

    where: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    # ends at the path's end are deliveries: freed there (without a tracepoint, or consumed), or not seen for
    # stale_ms after it (no drop was reported, so the packet reached the socket layer; it may still be queued)
    after_end = {"unseen": 0, "freed": 0, "stale": 0}
    for e in snapshot.get("ends") or ():
        pid, kind, n = int(e["point"]), str(e["kind"]), int(e.get("count", 0))
        if kind in after_end and pid in ends_at:
            after_end[kind] += n
            where["delivered"][name(pid)] += n
        else:
            where[kind][name(pid)] += n
    for dr in snapshot.get("drops") or ():
        pid = int(dr["point"]["id"] if isinstance(dr["point"], Mapping) else dr["point"])
        where["dropped"][f"{name(pid)} ({dr.get('reason_name') or dr.get('reason')})"] += int(dr.get("count", 0))
    live_stale_at_end = 0
    for lv in snapshot.get("live") or ():
        pid = int(lv["point"])
        if lv.get("in_flight"):
            where["in_flight"][name(pid)] += int(lv["in_flight"])
        if lv.get("stale") and pid in ends_at:
            live_stale_at_end += int(lv["stale"])
            where["delivered"][name(pid)] += int(lv["stale"])
        elif lv.get("stale"):
            where["stale"][name(pid)] += int(lv["stale"])
    unseen = c.get("ended_unseen", 0) - after_end["unseen"]
    return Accounting(
        started=c.get("started", 0),
        copied=c.get("ended_copy", 0),
        path_end=c.get("ended_path", 0),
        freed_after_end=sum(after_end.values()) + live_stale_at_end,
        dropped=c.get("ended_drop", 0),
        freed=c.get("ended_free", 0) - after_end["freed"],
        unseen=unseen,
        lost=c.get("lost", 0),
        stale=c.get("stale", 0) - after_end["stale"] + c.get("stale_in_table", 0) - live_stale_at_end,
        in_flight=c.get("in_flight", 0),
        where={k: tuple(sorted(v.items(), key=lambda kv: (-kv[1], kv[0]))) for k, v in where.items()},
        complete="in_flight" in c and "ended_unseen" in c,
    )
