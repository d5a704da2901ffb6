# SPDX-License-Identifier: Apache-2.0
"""Comparing the single tracer's snapshot with node agents' merged snapshot (the issue's bounds), and the recorded
run of both on the same packets (tests/unit/data/record_agents.py). Shared with tests/root/test_agents.py."""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "data"
PING300 = DATA / "recorded_agents_ping300.json.gz"  # flannel vxlan, 300 pings, +5 ms on node2's clock


def recorded(path: Path = PING300) -> dict[str, Any]:
    return json.loads(gzip.decompress(path.read_bytes()))


def hop_means(snapshot: Mapping[str, Any]) -> dict[tuple[int, int], tuple[float, int, bool]]:
    """(dir, seq) -> (mean ns, count, wire?) of the expected hops inside end-to-end that packets crossed."""
    out = {}
    for h in snapshot["hops"]:
        if h.get("expected") and h.get("in_e2e") and h["count"]:
            out[(int(h["dir"]), int(h["seq"]))] = (h["sum_ns"] / h["count"], int(h["count"]), bool(h.get("wire")))
    return out


def wire_keys(merged: Mapping[str, Any]) -> set[tuple[int, int]]:
    return {(int(h["dir"]), int(h["seq"])) for h in merged["hops"] if h.get("wire")}


def disagreements(single: Mapping[str, Any], merged: Mapping[str, Any], wire_only: bool = False) -> list[str]:
    """Every hop whose mean differs beyond the issue's bounds: 5 % or 0.5 µs inside a node, 10 % or 2 µs on the
    wire (whichever is larger); and every hop one side has and the other lacks. wire_only: the wire hops only."""
    a, b, wire = hop_means(single), hop_means(merged), wire_keys(merged)
    out = []
    for key in sorted(set(a) | set(b)):
        if wire_only and key not in wire:
            continue
        if key not in a or key not in b:
            out.append(f"hop {key}: single {a.get(key)} merged {b.get(key)}")
            continue
        rel, floor = (0.10, 2000.0) if key in wire else (0.05, 500.0)
        m1, m2 = a[key][0], b[key][0]
        if abs(m1 - m2) > max(rel * m1, floor):
            out.append(f"hop {key}: single {m1 / 1e3:.2f} µs vs agents {m2 / 1e3:.2f} µs")
    return out


def offset_error_ns(merged: Mapping[str, Any], offset_ns: int) -> float:
    est = merged["clock"]["offset_ns"]
    return math.inf if est is None else abs(est - offset_ns)
