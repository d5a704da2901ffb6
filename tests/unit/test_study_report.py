# SPDX-License-Identifier: Apache-2.0
"""`cniprof report` on a small run directory recorded here: a subset (host, flannel:vxlan, cilium:native x ping,
iperf3-tcp, sockperf-tcp, wrk-100k) of `cniprof run scenarios/cni-comparison.yaml --repetitions 2 --duration 2`,
its metadata, results and hop tables (the per-run runs/ exports are left out: the report does not read them)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from cniprof.cli.main import main
from cniprof.errors import UsageError
from cniprof.report import graphs, study

RUN = Path(__file__).parent / "data" / "study_run"


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(RUN, dst)
    return dst


def test_comparison_has_host_percentages():
    data = study.load(RUN)
    assert data.models[0] == study.HOST
    table = study.comparison(data)
    host = table[table["model"] == study.HOST]
    assert (host["pct_of_host"].dropna().round(6) == 100.0).all()
    other = table[(table["model"] != study.HOST) & (table["metric"] == "throughput_bps")].iloc[0]
    base = host[(host["generator"] == other["generator"]) & (host["metric"] == "throughput_bps")].iloc[0]
    assert other["pct_of_host"] == pytest.approx(100 * other["median"] / base["median"])


def test_stats_are_recomputed_from_the_generators_numbers():
    data = study.load(RUN)
    results = pd.read_csv(RUN / "results.csv")
    row = data.stats.iloc[0]
    values = results[(results["model"] == row["model"]) & (results["generator"] == row["generator"])
                     & (results["metric"] == row["metric"])]["value"]
    assert row["median"] == pytest.approx(values.median()) and row["n"] == len(values)


def test_hop_table_is_the_forward_direction_of_each_model():
    data = study.load(RUN)
    generator, table = graphs.hop_table(data)
    assert generator is not None and set(table["model"]) >= {study.HOST}
    for _model, t in table.groupby("model"):
        assert t["direction"].nunique() == 1 and list(t["seq"]) == sorted(t["seq"])


def test_report_cli_writes_table_and_graphs(run_dir, capsys):
    out = run_dir / "out"
    assert main(["report", str(run_dir), "--output", str(out)]) == 0
    for name in ("throughput", "latency", "hops-stacked"):
        assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert "<svg" in (out / f"{name}.svg").read_text()[:500]
    md = (out / "report.md").read_text()
    assert "| generator | metric |" in md and study.HOST in md and "% of host" not in md.splitlines()[0]
    comparison = pd.read_csv(out / "comparison.csv")
    assert {"median", "ci_low", "ci_high", "flagged", "pct_of_host"} <= set(comparison.columns)
    assert "graph files" in capsys.readouterr().out


def test_report_default_output_is_inside_the_run_dir(run_dir):
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "report" / "hops-stacked.svg").is_file()


def test_not_a_run_dir_is_one_line(tmp_path):
    with pytest.raises(UsageError, match="not a cniprof run directory"):
        study.load(tmp_path)
    assert main(["report", str(tmp_path)]) == 2


def test_unknown_hops_generator(run_dir):
    assert main(["report", str(run_dir), "--hops-generator", "nope"]) == 2


def test_fmt_units():
    assert study.fmt("throughput_bps", 12.3e9) == "12.30 Gbit/s"
    assert study.fmt("latency_p50_us", 48.66) == "48.7 µs"
    assert study.fmt("latency_p99_us", 42120.0) == "42.12 ms"
    assert study.fmt("requests_per_s", 13541.1) == "13,541/s"
    assert study.fmt("loss_pct", None) == "-"


def test_cpu_table_from_recorded_cpu_run(run_dir, capsys):
    from cniprof.analysis.cpu import analyze_cpu
    from cniprof.study import runner
    from tests.unit.cpu_data import recorded

    run = recorded()
    cpu = analyze_cpu(run["cpu"], None, None)
    rows = runner.cpu_rows(cpu)
    keys = {"run_id": "r1", "model": "flannel:vxlan", "path": "cross-node", "variant": "baseline",
            "generator": "tcp", "tool": "iperf3", "repetition": 1}
    pd.concat([rows.assign(**keys), rows.assign(**{**keys, "repetition": 2})]).to_csv(run_dir / "cpu.csv", index=False)
    summary = study.cpu_summary(study.load(run_dir))
    comps = summary[~summary["component"].str.startswith("NET_RX")]
    assert 0 < len(comps) <= study.CPU_TOP and comps["share_pct"].is_monotonic_decreasing
    top = cpu.components.iloc[0]
    assert comps.iloc[0]["component"] == top["component"] and comps.iloc[0]["share_pct"] == pytest.approx(top["share_pct"])
    net_rx = summary[summary["component"].str.startswith("NET_RX cpu ")]
    assert len(net_rx) == len(cpu.softirq) and net_rx["net_rx_pct"].notna().all()
    out = run_dir / "out"
    assert main(["report", str(run_dir), "--output", str(out)]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "cni-comparison: CPU (median" in printed
    assert len(pd.read_csv(out / "cpu_summary.csv")) == len(summary)
