# SPDX-License-Identifier: Apache-2.0
"""Run directories for the report tests, exported (report.export.export_trace) from recorded real runs: a trace
(`trace --cpu`), the same with the node state of a run with offloads off on flannel.1 (a fault), a comparison
(`trace --cni flannel,calico:bgp,host --export`) and a tune run."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
from cpu_data import DATA, recorded

from cniprof.analysis.compare import COMPARE_CSV, Entry, Skipped, compare
from cniprof.analysis.record import TraceRecord, analyze_record
from cniprof.report import tune as tune_report
from cniprof.report.export import export_trace, model_dir

STUDY_RUN = DATA / "study_run"
OFFLOADS_OFF = DATA / "advise" / "flannel_offloads_off"  # nodestate.json of `lab inject offloads-off`
COMMAND = "cniprof trace --cni flannel --duration 3 --cpu --export run"
STARTED = "2026-11-30T14:05:09+0100"


def _record(run: dict, **kw) -> TraceRecord:
    s = run["summary"]
    return TraceRecord(s["cni"], s["mode"], "cross-node", run["hops"], s["duration_s"], traffic=s["traffic"],
                       probes=tuple(s.get("probes") or ()), sampling=s.get("sampling") or {"mode": "auto", "every": 1},
                       kernel=s["kernel"], arch=s["arch"], command=COMMAND, started=STARTED, **kw)


def trace_export(out: Path) -> Path:
    """The recorded 2 s iperf3 flannel trace with --cpu, exported as `trace --cpu --export` does."""
    run = recorded()
    export_trace(out, _record(run, cpu=run["cpu"]))
    return out


def fault_export(out: Path) -> Path:
    """The recorded trace with the node state of a lab whose flannel.1 has its offloads off."""
    nodestate = json.loads((OFFLOADS_OFF / "nodestate.json").read_text())
    export_trace(out, _record(recorded(), nodestate=nodestate))
    return out


def comparison_export(out: Path) -> Path:
    """The recorded comparison: one export per traced model and compare.csv."""
    rec = json.loads(gzip.decompress((DATA / "recorded_compare_iperf3.json.gz").read_bytes()))
    entries = []
    for m in rec["models"]:
        cni, _, mode = m["spec"].partition(":")
        record = TraceRecord(cni, mode, "cross-node", m["snapshot"], float(m["snapshot"].get("elapsed_s") or 2.0),
                             traffic={"tool": "iperf3", "throughput_bps": m["throughput_bps"]},
                             sampling={"mode": "auto", "every": m["sample_every"]}, command=COMMAND)
        export_trace(out / model_dir(m["spec"]), record)
        entries.append(Entry(m["spec"], analyze_record(record).tables, m["throughput_bps"], m["sample_every"]))
    compare(entries, [Skipped("calico:ipip", "needs CONFIG_NET_IPIP")]).to_csv(out / COMPARE_CSV)
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
