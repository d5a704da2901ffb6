# SPDX-License-Identifier: Apache-2.0
"""One export, whichever command traced: the same recorded run written by `trace --export`, by a comparison
(`trace --cni a,b --export`) and by a study run gives identical files, byte for byte; `cniprof report` reads
the trace export and the comparison back.

The kernel side is replaced by the recorded run (run.trace.preflight/run return it), so what is exercised is
each command's own path from the traced record to its files.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from cpu_data import recorded

from cniprof.analysis.record import TraceRecord
from cniprof.cli.main import main
from cniprof.cni import registry
from cniprof.cni.topology import Topology
from cniprof.probes.plan import Plan
from cniprof.report.export import load_record
from cniprof.run import trace
from cniprof.study import runner

DATA = Path(__file__).parent / "data"


@pytest.fixture
def record() -> TraceRecord:
    run = recorded()
    return TraceRecord(
        "flannel", "vxlan", "cross-node", run["hops"], 4.0,
        traffic={"tool": "iperf3", "throughput_bps": 9.1e9, "retransmits": 3, "bytes": 4.55e9},
        probes=("tp_btf/net:net_dev_queue", "tp_btf/net:netif_receive_skb"),
        sampling={"mode": "auto", "every": 4, "calibration_s": 0.5}, cpu=run["cpu"],
        nf=json.loads((DATA / "recorded_nf_service_udp23.json").read_text()),
        nodestate=json.loads((DATA / "advise" / "flannel_clean" / "nodestate.json").read_text()),
        where="lab reused, left up", command="cniprof trace (recorded)", kernel="6.18.0", arch="x86_64")


@pytest.fixture
def traced(monkeypatch: pytest.MonkeyPatch, record: TraceRecord) -> TraceRecord:
    """trace.preflight/run answer with the recorded run for any model (its cni/mode follow the model)."""

    def preflight(opts: trace.TraceOptions) -> object:
        opts.path = opts.path or "cross-node"
        return registry.parse(opts.cni)

    def run(opts: trace.TraceOptions, on_update=None, on_cpu=None, model=None) -> trace.TraceResult:
        model = model or registry.parse(opts.cni)
        rec = dataclasses.replace(record, cni=model.cni, mode=model.mode)
        return trace.TraceResult(rec, model, Topology(model.cni, model.mode, (), ()), Plan((), (), ()), False)

    monkeypatch.setattr(trace, "preflight", preflight)
    monkeypatch.setattr(trace, "run", run)
    return record


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


def test_trace_comparison_and_study_write_the_same_files(traced: TraceRecord, tmp_path: Path) -> None:
    assert main(["trace", "--no-ui", "--cni", "flannel", "--export", str(tmp_path / "trace")]) == 0
    assert main(["trace", "--no-ui", "--cni", "flannel,host", "--export", str(tmp_path / "cmp")]) == 0
    runner.hop_table(traced, tmp_path / "study")

    single = _files(tmp_path / "trace")
    assert set(single) >= {"hops.csv", "hops.parquet", "drops.csv", "summary.json", "snapshot.json",
                           "nodestate.json", "hops-flame.svg", "cpu.json", "cpu.folded", "cpu.speedscope.json",
                           "cpu.svg", "nf.csv", "nf.json", "findings.json", "findings.csv"}
    for other in (tmp_path / "cmp" / "flannel-vxlan", tmp_path / "study"):
        files = _files(other)
        assert set(files) == set(single), other
        differ = [name for name in single if files[name] != single[name]]
        assert differ == [], f"{other}: {differ}"
    summary = json.loads(single["summary.json"])
    assert summary["sampling"] == {"mode": "auto", "every": 4, "calibration_s": 0.5}
    assert summary["probes"] == ["tp_btf/net:net_dev_queue", "tp_btf/net:netif_receive_skb"]  # attach points
    assert (tmp_path / "cmp" / "compare.csv").is_file() and (tmp_path / "cmp" / "host-network").is_dir()


def test_report_reads_a_trace_export_and_a_comparison(traced: TraceRecord, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trace", "--no-ui", "--cni", "flannel", "--export", str(tmp_path / "trace")]) == 0
    assert main(["trace", "--no-ui", "--cni", "flannel,host", "--export", str(tmp_path / "cmp")]) == 0
    assert load_record(tmp_path / "trace") == traced
    capsys.readouterr()

    assert main(["report", str(tmp_path / "trace")]) == 0
    out = capsys.readouterr().out
    assert "path check:" in out and "sampling: 1 in 4 packets" in out and "netfilter" in out
    assert {"hops-flame.svg", "cpu.svg", "findings.json"} <= {p.name for p in (tmp_path / "trace" / "report").iterdir()}

    assert main(["report", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    assert "flannel:vxlan" in out and "host:network" in out
    assert (tmp_path / "cmp" / "report" / "compare.csv").read_text() == (tmp_path / "cmp" / "compare.csv").read_text()


def test_report_on_a_directory_without_a_run_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds no cniprof run" in err[0]
