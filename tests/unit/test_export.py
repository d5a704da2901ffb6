# SPDX-License-Identifier: Apache-2.0
"""The run exports: same rows in CSV and Parquet, summary.json built only from what was given."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from cniprof.analysis.summary import analyze, summary_dict
from cniprof.report.export import export

DATA = Path(__file__).parent / "data"
FWD, REV = "pod-a→pod-c", "pod-c→pod-a"


@pytest.fixture
def snap() -> dict:
    return json.loads((DATA / "flannel_cross_node.json").read_text())


def test_writes_all_files(tmp_path: Path, snap: dict) -> None:
    out = tmp_path / "run" / "nested"
    paths = export(out, snap, cni="flannel", mode="vxlan")
    assert sorted(p.name for p in paths.values()) == sorted(
        ["hops.csv", "hops.parquet", "drops.csv", "summary.json", "snapshot.json"]
    )
    assert all(p.is_file() for p in paths.values())
    assert not list(out.glob("*.tmp"))


def test_hops_csv_and_parquet_hold_the_same_rows(tmp_path: Path, snap: dict) -> None:
    export(tmp_path, snap, cni="flannel", mode="vxlan")
    a = analyze(snap)
    pq = pd.read_parquet(tmp_path / "hops.parquet")
    csv = pd.read_csv(tmp_path / "hops.csv")
    assert len(pq) == len(csv) == len(a.hops) == 27
    pd.testing.assert_frame_equal(pq, a.hops.reset_index(drop=True))
    assert list(csv.columns) == list(pq.columns)
    for col in ("direction", "seq", "hop", "role", "packets", "expected"):
        assert csv[col].tolist() == pq[col].tolist(), col
    assert csv.mean_us.round(6).tolist() == pytest.approx(pq.mean_us.round(6).tolist(), nan_ok=True)
    assert {
        "direction",
        "seq",
        "hop",
        "role",
        "node",
        "device",
        "from_point",
        "to_point",
        "packets",
        "p50_us",
        "p90_us",
        "p99_us",
        "mean_us",
        "share_pct",
        "expected",
    } <= set(pq.columns)


def test_drops_csv(tmp_path: Path, snap: dict) -> None:
    export(tmp_path, snap, cni="flannel", mode="vxlan")
    drops = pd.read_csv(tmp_path / "drops.csv")
    assert list(drops.columns) == ["point", "node", "device", "reason", "count"]
    assert drops.values.tolist() == [
        ["node1 eth0 queue", "node1", "eth0", "NOT_SPECIFIED", 3],
        ["node1 pod-a eth0 receive", "node1", "eth0", "TCP_OLD_DATA", 1],
    ]


def test_snapshot_json_is_the_raw_snapshot(tmp_path: Path, snap: dict) -> None:
    export(tmp_path, snap, cni="flannel", mode="vxlan")
    assert json.loads((tmp_path / "snapshot.json").read_text()) == snap


def test_summary_json(tmp_path: Path, snap: dict) -> None:
    traffic = {"tool": "iperf3", "throughput_bps": 9.41e9, "retransmits": 12, "omitted": "not exported"}
    export(tmp_path, snap, cni="flannel", mode="vxlan", duration_s=10.5, traffic=traffic)
    s = json.loads((tmp_path / "summary.json").read_text())
    a = analyze(snap)
    e2e = a.e2e.set_index("direction")
    recon = a.reconciliation.set_index("direction")
    assert (s["cni"], s["mode"], s["duration_s"]) == ("flannel", "vxlan", 10.5)
    assert (s["kernel"], s["arch"]) == (platform.release(), platform.machine())
    assert s["traffic"] == {"tool": "iperf3", "throughput_bps": 9.41e9, "retransmits": 12}
    top = s["end_to_end"]
    assert top["direction"] == FWD
    assert top["mean_us"] == pytest.approx(e2e.loc[FWD, "mean_us"])
    assert top["p50_us"] == pytest.approx(e2e.loc[FWD, "p50_us"])
    assert top["p99_us"] == pytest.approx(e2e.loc[FWD, "p99_us"])
    assert set(top["directions"]) == {FWD, REV}
    assert top["directions"][REV]["packets"] == 401
    assert top["directions"][REV]["mean_us"] == pytest.approx(e2e.loc[REV, "mean_us"])
    assert s["hop_mean_sum_us"] == pytest.approx(recon.loc[FWD, "hop_mean_sum_us"])
    assert s["unattributed_pct"] == pytest.approx(recon.loc[FWD, "unattributed_pct"])
    assert s["probes"] == snap["programs"]
    assert s["lost_events"] == 2  # stale 2; this snapshot has no "lost" counter
    assert s["counters"] == snap["counters"]


def test_summary_without_generator_or_counters(snap: dict) -> None:
    snap.pop("counters")
    snap.pop("programs")
    s = summary_dict(analyze(snap), cni="flannel", mode="vxlan", traffic=None, kernel="k", arch="a")
    assert s["traffic"] == {"tool": None, "throughput_bps": None, "retransmits": None}
    assert s["lost_events"] is None and s["counters"] == {}
    assert s["probes"] == [] and s["duration_s"] == snap["elapsed_s"]
    assert (s["kernel"], s["arch"]) == ("k", "a")


def test_lost_and_stale_are_summed(snap: dict) -> None:
    snap["counters"]["lost"] = 5
    assert summary_dict(analyze(snap), cni=None, mode=None)["lost_events"] == 7


def test_traffic_result_object_and_explicit_probes(tmp_path: Path, snap: dict) -> None:
    result = SimpleNamespace(tool="udp", throughput_bps=None, retransmits=None, lost=3)
    export(tmp_path, snap, cni="flannel", mode="vxlan", traffic=result, probes=["tp_btf"])
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["traffic"] == {"tool": "udp", "throughput_bps": None, "retransmits": None}
    assert s["probes"] == ["tp_btf"]


def test_empty_run_writes_valid_json(tmp_path: Path) -> None:
    empty = {
        "version": 1,
        "elapsed_s": 1.0,
        "points": [],
        "hops": [],
        "e2e": [],
        "drops": [],
        "counters": {},
        "directions": [{"dir": 0, "src_pod": "pod-a", "dst_pod": "pod-c"}],
    }
    export(tmp_path, empty, cni="flannel", mode="vxlan")  # json.dumps(allow_nan=False) would raise on NaN
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["end_to_end"]["mean_us"] is None and s["end_to_end"]["packets"] == 0
    assert s["unattributed_pct"] is None
    assert pd.read_csv(tmp_path / "drops.csv").empty


def test_export_uses_the_given_analysis(tmp_path: Path, snap: dict) -> None:
    a = analyze(snap)
    trimmed = type(a)(**{**a.__dict__, "hops": a.hops.head(3)})
    export(tmp_path, snap, cni="flannel", mode="vxlan", analysis=trimmed)
    assert len(pd.read_parquet(tmp_path / "hops.parquet")) == 3
