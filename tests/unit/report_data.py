# SPDX-License-Identifier: Apache-2.0
"""Run directories for the report tests, written from recorded real runs: a trace export (`trace --cpu`), a
comparison export (`trace --cni flannel,calico:bgp,host --export`) and a tune run."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
from cpu_data import DATA, recorded, traffic_bytes

from cniprof.advise import render
from cniprof.advise.engine import advise_run
from cniprof.advise.load import load_run
from cniprof.analysis.cpu import analyze_cpu, with_cpu
from cniprof.analysis.summary import analyze
from cniprof.compare import Entry, Skipped, compare
from cniprof.report import tune as tune_report
from cniprof.report.export import export
from cniprof.report.flames import export_flames

STUDY_RUN = DATA / "study_run"
OFFLOADS_OFF = DATA / "advise" / "flannel_offloads_off"  # a trimmed trace export whose top finding is a fault


def _export(out: Path, snapshot: dict, summary: dict, cpu_snapshot: dict | None = None) -> Path:
    a = analyze(snapshot)
    extra = {"sampling": summary.get("sampling") or {"mode": "auto", "every": 1}}
    if cpu_snapshot is not None:
        cpu = analyze_cpu(cpu_snapshot, a.hops, summary["traffic"]["throughput_bps"] / 8 * summary["duration_s"],
                          extra["sampling"]["every"])
        a, extra = with_cpu(a, cpu), {**extra, "cpu": cpu.summary}
    export(out, snapshot, analysis=a, cni=summary["cni"], mode=summary["mode"], duration_s=summary["duration_s"],
           traffic=summary["traffic"], extra=extra)
    export_flames(out, a.hops, cpu_snapshot, e2e_mean_us=dict(zip(a.e2e["direction"], a.e2e["mean_us"])))
    render.write(out, advise_run(load_run(out)), str(out), "trace")
    return out


def trace_export(out: Path) -> Path:
    """The recorded 2 s iperf3 flannel trace with --cpu, exported as `trace --cpu --export` does."""
    run = recorded()
    assert traffic_bytes(run) > 0
    return _export(out, run["hops"], run["summary"], run["cpu"])


def comparison_export(out: Path) -> Path:
    """The recorded comparison: one export per traced model and compare.csv."""
    rec = json.loads(gzip.decompress((DATA / "recorded_compare_iperf3.json.gz").read_bytes()))
    entries = []
    for m in rec["models"]:
        cni, _, mode = m["spec"].partition(":")
        summary = {"cni": cni, "mode": mode, "duration_s": m["snapshot"].get("elapsed_s", 2.0),
                   "traffic": {"tool": "iperf3", "throughput_bps": m["throughput_bps"], "retransmits": None},
                   "sampling": {"mode": "auto", "every": m["sample_every"]}}
        _export(out / f"{cni}-{mode}", m["snapshot"], summary)
        entries.append(Entry(m["spec"], analyze(m["snapshot"]), m["throughput_bps"], m["sample_every"]))
    compare(entries, [Skipped("calico:ipip", "needs CONFIG_NET_IPIP")]).to_csv(out / "compare.csv")
    return out


def tune_run(out: Path) -> Path:
    """tune.csv/tune.json of two tunings measured in 3 ABBA pairs (numbers as iperf3 printed them)."""
    rows = []
    for tuning, gain in (("offloads-on", 1.2), ("jumbo-mtu", 1.0)):
        for pair, base in enumerate((10.1e9, 9.8e9, 10.0e9), 1):
            for position, arm in enumerate(("baseline", "tuned") if pair % 2 else ("tuned", "baseline")):
                value = base * (gain if arm == "tuned" else 1.0)
                rows.append({"tuning": tuning, "generator": "iperf3", "tool": "iperf3", "metric": "throughput_bps",
                             "higher_is_better": True, "pair": pair, "arm": arm, "position": position,
                             "throughput_bps": value, "retransmits": 3})
    tune_report.write(out, pd.DataFrame(rows), {"cni": "flannel:vxlan", "path": "cross-node", "pairs": 3,
                                                "duration_s": 2.0, "injections": ["offloads-off"]})
    return out
