# SPDX-License-Identifier: Apache-2.0
"""Analysis and export on snapshots recorded from the real kernel (`cniprof trace --export`, flannel VXLAN lab):
ping -c 7 (both directions) and a paced burst of 23 UDP datagrams (one direction)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from cniprof.analysis.record import TraceRecord
from cniprof.analysis.summary import analyze
from cniprof.report.export import export_trace

DATA = Path(__file__).parent / "data"


def _load(name: str) -> dict:
    return json.loads((DATA / name).read_text())


@pytest.fixture(scope="module")
def ping() -> dict:
    return _load("recorded_flannel_ping7.json")


@pytest.fixture(scope="module")
def udp() -> dict:
    return _load("recorded_flannel_udp23.json")


def test_ping_counts_and_names(ping: dict) -> None:
    a = analyze(ping)
    assert a.directions == ("pod-a→pod-c", "pod-c→pod-a")
    for d in a.directions:
        path = a.hops_for(d)
        path = path[path["expected"] & path["in_e2e"]]
        assert list(path["seq"]) == list(range(1, 10))
        assert (path["packets"] == 7).all()
        assert path.iloc[0]["hop"].startswith("node")
    fwd = a.hops_for("pod-a→pod-c")
    assert list(fwd[fwd["expected"]]["role"])[3] == "vxlan encap"
    assert "node1 flannel.1 → node1 eth0" in set(fwd["hop"])


def test_ping_reconciles_exactly(ping: dict) -> None:
    a = analyze(ping)
    for _, row in a.reconciliation.iterrows():
        assert row["e2e_mean_us"] > 0
        assert abs(row["unattributed_pct"]) < 0.01


def test_ping_ends_at_the_path_end_without_drops(ping: dict) -> None:
    """ICMP has no socket copy to wait for: tracking ends at the destination's stack entry, so the raw socket's
    clone and the original's NO_SOCKET free after it are not the probe's business (no drop is reported)."""
    assert len(analyze(ping).drops) == 0
    assert ping["counters"]["ended_path"] == 14


def test_udp_one_direction(udp: dict) -> None:
    a = analyze(udp)
    fwd = a.hops_for("pod-a→pod-c")
    on_path = fwd[fwd["expected"] & fwd["in_e2e"]]
    assert (on_path["packets"] == 23).all()
    rev = a.hops_for("pod-c→pod-a")
    assert (rev["packets"] == 0).all()
    assert a.e2e_for("pod-a→pod-c")["packets"] == 23


def test_export_round_trip(udp: dict, tmp_path: Path) -> None:
    a = analyze(udp)
    paths = export_trace(tmp_path, TraceRecord("flannel", "vxlan", "cross-node", udp, 1.0,
                                               traffic={"tool": "udp", "throughput_bps": None, "retransmits": None},
                                               probes=("tp_btf/net_dev_queue",)))
    csv = pd.read_csv(paths["hops.csv"])
    parquet = pd.read_parquet(paths["hops.parquet"])
    assert len(csv) == len(parquet) == len(a.hops)
    assert list(csv["packets"]) == list(parquet["packets"])
    summary = json.loads(paths["summary.json"].read_text())
    assert summary["end_to_end"]["packets"] == 23
    assert summary["hop_mean_sum_us"] == pytest.approx(summary["end_to_end"]["mean_us"], rel=1e-6)
