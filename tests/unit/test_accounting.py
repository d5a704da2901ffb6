# SPDX-License-Identifier: Apache-2.0
"""The accounting of a snapshot: every started packet in exactly one category (cniprof.analysis.accounting).

Synthetic snapshots built on the recorded flannel udp23 run (its points), with the counters, per-point ends and
live slots a probe with exact accounting writes; the root tests (tests/root/test_drops.py) check the same sums on
real runs."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from rich.console import Console

from cniprof.analysis.accounting import accounting
from cniprof.analysis.hops import point_name
from cniprof.analysis.summary import analyze, summary_dict
from cniprof.ui.tables import accounting_text

DATA = Path(__file__).parent / "data"


def _snap() -> dict:
    snap = json.loads((DATA / "recorded_flannel_udp23.json").read_text())
    return copy.deepcopy(snap)


def _pid(snap: dict, name: str) -> int:
    return next(int(p["id"]) for p in snap["points"] if point_name(p) == name)


def _with_ends(snap: dict) -> dict:
    end, cni0, eth0 = (_pid(snap, n) for n in ("node2 pod-c eth0 receive", "node1 cni0 receive",
                                               "node2 eth0 receive"))
    snap["points"][end]["end"] = True
    snap["counters"] = {"started": 1000, "ended_copy": 300, "ended_path": 10, "ended_drop": 100, "ended_free": 25,
                        "ended_unseen": 470, "lost": 5, "stale": 3, "in_flight": 85, "stale_in_table": 2,
                        "unexpected": 0, "candidates": 1000}
    snap["drops"] = [{"point": cni0, "reason": 62, "reason_name": "TC_EGRESS", "count": 100}]
    snap["ends"] = [{"point": end, "kind": "unseen", "count": 460}, {"point": eth0, "kind": "unseen", "count": 10},
                    {"point": eth0, "kind": "freed", "count": 20}, {"point": end, "kind": "freed", "count": 5},
                    {"point": end, "kind": "lost", "count": 5},
                    {"point": eth0, "kind": "stale", "count": 3}]
    snap["live"] = [{"point": end, "in_flight": 85, "stale": 2}]
    return snap


def test_categories_add_up_to_started() -> None:
    acc = accounting(_with_ends(_snap()))
    assert acc.complete and acc.started == 1000 and acc.unexplained == 0
    # freed or stale at the path's end is delivery (a UDP read, TCP coalescing, consumed, queued: no drop was
    # reported); before it, a merge or a tracking loss on the way
    assert (acc.copied, acc.freed_after_end, acc.path_end) == (300, 467, 10) and acc.delivered == 777
    assert (acc.dropped, acc.freed, acc.unseen, acc.lost, acc.stale, acc.in_flight) == (100, 20, 10, 5, 3, 85)
    assert acc.where["dropped"] == (("node1 cni0 receive (TC_EGRESS)", 100),)
    assert acc.where["unseen"] == (("node2 eth0 receive", 10),)
    assert dict(acc.where["stale"]) == {"node2 eth0 receive": 3}


def test_unexplained_is_what_no_category_holds() -> None:
    snap = _with_ends(_snap())
    snap["counters"]["started"] = 1007
    assert accounting(snap).unexplained == 7


def test_an_older_probe_is_incomplete() -> None:
    # recorded before every end was counted: no in-flight scan, no unseen ends
    acc = accounting(_snap())
    assert not acc.complete and acc.started == 23 and acc.delivered == 23 and acc.unexplained == 0


def test_summary_and_table_show_the_accounting() -> None:
    a = analyze(_with_ends(_snap()))
    s = summary_dict(a, cni="flannel", mode="vxlan", kernel="k", arch="x86_64")
    assert s["accounting"]["categories"] == {"delivered": 777, "dropped": 100, "freed": 20, "unseen": 10, "lost": 5,
                                             "stale": 3, "in_flight": 85}
    assert s["accounting"]["unexplained"] == 0
    assert s["drops"] == [{"point": "node1 cni0 receive", "node": "node1", "device": "cni0", "reason": "TC_EGRESS",
                           "reason_code": 62, "count": 100}]
    console = Console(width=200, record=True)
    console.print(accounting_text(a.accounting))
    text = console.export_text()
    assert "accounting: started 1,000 = delivered 777 (copied 300, freed after the end 467, ended there 10)" \
        in text
    assert "+ dropped 100 (node1 cni0 receive (TC_EGRESS) 100)" in text and "unexplained 0" in text
