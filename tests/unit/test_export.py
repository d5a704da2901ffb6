# SPDX-License-Identifier: Apache-2.0
"""The one export of a run: same rows in CSV and Parquet, summary.json built only from what was recorded, and an
export read back gives the same record."""

from __future__ import annotations

import json
import platform
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from cniprof.analysis.record import TraceRecord, analyze_record
from cniprof.analysis.summary import analyze, summary_dict
from cniprof.errors import UsageError
from cniprof.report.export import export_trace, load_record

DATA = Path(__file__).parent / "data"
FWD, REV = "pod-a→pod-c", "pod-c→pod-a"


@pytest.fixture
def snap() -> dict:
    return json.loads((DATA / "flannel_cross_node.json").read_text())


def export(out: Path, snap: dict, traffic: object = None, probes: tuple[str, ...] = (), duration_s: float = 10.0,
           **kw: object) -> dict[str, Path]:
    rec = TraceRecord("flannel", "vxlan", "cross-node", snap, duration_s, traffic=traffic or {}, probes=probes,
                      sampling={"mode": "fixed", "every": 1}, kernel=platform.release(), arch=platform.machine(),
                      **kw)
    return export_trace(out, rec)


def test_writes_all_files(tmp_path: Path, snap: dict) -> None:
    out = tmp_path / "run" / "nested"
    paths = export(out, snap)
    assert sorted(paths) == sorted(["hops.csv", "hops.parquet", "drops.csv", "summary.json", "snapshot.json",
                                    "hops-flame.svg", "findings.json", "findings.csv"])
    assert sorted(p.name for p in out.iterdir()) == sorted(paths)  # nothing else, no temporary file
    assert all(p.is_file() and p.parent == out for p in paths.values())
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["nested"]  # no staging directory left
    assert out.stat().st_mode & 0o777 == 0o755 and (out / "summary.json").stat().st_mode & 0o777 == 0o644


def test_hops_csv_and_parquet_hold_the_same_rows(tmp_path: Path, snap: dict) -> None:
    export(tmp_path, snap)
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
    export(tmp_path, snap)
    drops = pd.read_csv(tmp_path / "drops.csv")
    assert list(drops.columns) == ["point", "node", "device", "reason", "count"]
    assert drops.values.tolist() == [
        ["node1 eth0 queue", "node1", "eth0", "NOT_SPECIFIED", 3],
        ["node1 pod-a eth0 receive", "node1", "eth0", "TCP_OLD_DATA", 1],
    ]


def test_snapshot_json_is_the_raw_snapshot(tmp_path: Path, snap: dict) -> None:
    export(tmp_path, snap)
    assert json.loads((tmp_path / "snapshot.json").read_text()) == snap


def test_summary_json(tmp_path: Path, snap: dict) -> None:
    traffic = {"tool": "iperf3", "throughput_bps": 9.41e9, "retransmits": 12, "omitted": "not exported"}
    export(tmp_path, snap, duration_s=10.5, traffic=traffic)
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
    assert s["probes"] == []  # none recorded
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
    result = {"tool": "udp", "throughput_bps": None, "retransmits": None, "lost": 3}
    export(tmp_path, snap, traffic=result, probes=("tp_btf/net_dev_queue",))
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["traffic"] == {"tool": "udp", "throughput_bps": None, "retransmits": None}
    assert s["generator"] == result  # every number the generator printed, for a later re-analysis
    assert s["probes"] == ["tp_btf/net_dev_queue"]


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
    export(tmp_path, empty)  # json.dumps(allow_nan=False) would raise on NaN
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["end_to_end"]["mean_us"] is None and s["end_to_end"]["packets"] == 0
    assert s["unattributed_pct"] is None
    assert pd.read_csv(tmp_path / "drops.csv").empty


def test_export_uses_the_given_analysis(tmp_path: Path, snap: dict) -> None:
    rec = TraceRecord("flannel", "vxlan", "cross-node", snap, 1.0)
    a = analyze_record(rec)
    trimmed = replace(a, tables=replace(a.tables, hops=a.tables.hops.head(3)))
    export_trace(tmp_path, rec, trimmed)
    assert len(pd.read_parquet(tmp_path / "hops.parquet")) == 3


def test_an_export_reads_back_as_the_record_it_was_written_from(tmp_path: Path, snap: dict) -> None:
    rec = TraceRecord("flannel", "vxlan", "pod-to-service", snap, 3.25,
                      traffic={"tool": "udp", "throughput_bps": None, "retransmits": None, "received": 400},
                      probes=("tp_btf/net_dev_queue", "tp_btf/netif_receive_skb"),
                      sampling={"mode": "auto", "every": 4, "calibration_s": 0.5}, nodestate={"nodes": {}},
                      service={"cluster_ip": "10.96.0.100"}, injections=("offloads-off",), where="lab reused",
                      command="cniprof trace --path pod-to-service", kernel="6.1.0", arch="aarch64")
    export_trace(tmp_path, rec)
    assert load_record(tmp_path) == rec
    first = (tmp_path / "summary.json").read_text()
    export_trace(tmp_path / "again", load_record(tmp_path))
    assert (tmp_path / "again" / "summary.json").read_text() == first


def test_an_unwritable_export_is_refused_in_one_line(tmp_path: Path, snap: dict) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="is not a directory"):
        export(tmp_path / "file" / "below", snap)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
