# SPDX-License-Identifier: Apache-2.0
"""Node agents' snapshots -> one snapshot of the single tracer's schema (ARCHITECTURE.md "Node agents").

Each agent traced its own node's half of every direction; merging renumbers their points (ids offset per node, in
node order), keeps every hop, drop and counter, and adds what no single node could time: per direction the wire
hop between the source node's last point and the destination node's first point, and the end-to-end time of every
packet seen on both nodes, both corrected by the estimated clock offset (cniprof.analysis.clock). The result goes
through the same analysis, table, path check and export as a single tracer's snapshot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cniprof.analysis.clock import ClockResult
from cniprof.analysis.histogram import Histogram


@dataclass(frozen=True)
class WireLabel:
    """The wire hop's place in a direction's chain: the seq and role of the destination node's first step."""

    seq: int
    role: str


def _entry(values: np.ndarray) -> dict[str, Any]:
    h = Histogram.from_values(values)
    return {"count": int(h.count), "sum_ns": int(h.sum_ns or 0), "buckets": h.to_sparse()}


def _ref(x: Any) -> int:
    return int(x["id"]) if isinstance(x, Mapping) else int(x)


def boundary_point(snapshot: Mapping[str, Any], direction: int, kind: str) -> int | None:
    """The node's local id of its "last" (source side) or "first" (destination side) point of a direction."""
    ends = {_ref(h["to"]) for h in snapshot.get("hops") or () if h.get("expected") and h.get("dir") == direction}
    for p in snapshot.get("points") or ():
        if kind in (p.get("record") or ()) and (p.get("start_dir") == direction or
                                                (kind == "last" and int(p["id"]) in ends)):
            return int(p["id"])
    return None


def merge(snapshots: Mapping[str, Mapping[str, Any]], sides: Mapping[int, tuple[str, str]],
          wire: Mapping[int, WireLabel], clock: ClockResult | None) -> dict[str, Any]:
    """One snapshot from the nodes' snapshots (in node order). sides: dir -> (source node, destination node)."""
    offset: dict[str, int] = {}
    points: list[dict[str, Any]] = []
    hops: list[dict[str, Any]] = []
    drops: list[dict[str, Any]] = []
    ends: list[dict[str, Any]] = []
    live: list[dict[str, Any]] = []
    counters: dict[str, int] = {}
    nodes: dict[str, Any] = {}
    for node, snap in snapshots.items():
        base = offset[node] = len(points)
        for p in snap.get("points") or ():
            points.append({**p, "id": base + int(p["id"]), "node": p.get("node") or node})
        for h in snap.get("hops") or ():
            hops.append({**h, "from": base + _ref(h["from"]), "to": base + _ref(h["to"])})
        for d in snap.get("drops") or ():
            drops.append({**d, "point": base + _ref(d["point"])})
        for key, out in (("ends", ends), ("live", live)):
            for e in snap.get(key) or ():
                out.append({**e, "point": base + _ref(e["point"])})
        for k, v in (snap.get("counters") or {}).items():
            counters[k] = counters.get(k, 0) + int(v)
        nodes[node] = {"counters": dict(snap.get("counters") or {}), "e2e": list(snap.get("e2e") or ()),
                       "elapsed_s": snap.get("elapsed_s"), "sample_every": snap.get("sample_every")}

    directions: dict[int, dict[str, Any]] = {}
    for d, (src, _) in sorted(sides.items()):
        for x in (snapshots.get(src) or {}).get("directions") or ():
            if int(x["dir"]) == d:
                directions[d] = dict(x)
    times = {t.crossing.dir: t for t in clock.directions} if clock is not None else {}
    e2e = []
    for d, (src, dst) in sorted(sides.items()):
        t = times.get(d)
        e2e.append({"dir": d, **_entry(t.e2e if t is not None else np.zeros(0, np.int64))})
        if t is None or src not in snapshots or dst not in snapshots:
            continue  # no offset, no wire hop: two clocks are never subtracted without one
        a = boundary_point(snapshots[src], d, "last")
        b = boundary_point(snapshots[dst], d, "first")
        if a is None or b is None or d not in wire:
            continue
        est = clock.estimate if clock is not None else None
        hops.append({"from": offset[src] + a, "to": offset[dst] + b, "expected": True, "dir": d,
                     "seq": wire[d].seq, "role": wire[d].role, "in_e2e": True, **_entry(t.wire),
                     "wire": True, "uncertainty_ns": None if est is None else round(est.uncertainty_ns, 1)})
    first = next(iter(snapshots.values()), {})
    return {
        "version": 1,
        "elapsed_s": max((float(s.get("elapsed_s") or 0.0) for s in snapshots.values()), default=0.0),
        "points": points,
        "hops": hops,
        "e2e": e2e,
        "drops": drops,
        "ends": ends,
        "live": live,
        "counters": counters,
        "directions": [directions[d] for d in sorted(directions)],
        "programs": sorted({p for s in snapshots.values() for p in s.get("programs") or ()}),
        "sample_every": first.get("sample_every"),
        "nodes": nodes,
    }


def sides_of(directions: Sequence[Mapping[str, Any]]) -> dict[int, tuple[str, str]]:
    """dir -> (source node, destination node) from direction specs carrying src_node/dst_node."""
    return {int(d["dir"]): (str(d["src_node"]), str(d["dst_node"])) for d in directions}
