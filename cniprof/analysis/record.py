# SPDX-License-Identifier: Apache-2.0
"""One traced run as plain data (TraceRecord), and everything derived from it in one call (analyze_record).

Whichever command traced (`trace`, `trace --cni a,b`, a study run, the overhead benchmark, a re-render by
`cniprof report`), the tables, summary.json, the path check and the findings come from this one function, so
the console, the files and a later report can never disagree about a number.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cniprof import __version__
from cniprof.advise.engine import advise_run
from cniprof.advise.finding import Finding
from cniprof.advise.load import RunData, samples_of
from cniprof.analysis import nf as nf_analysis
from cniprof.analysis import path_check
from cniprof.analysis.cpu import CpuAnalysis, analyze_cpu, traffic_bytes, with_cpu
from cniprof.analysis.hops import is_labelled
from cniprof.analysis.nf import NfAnalysis, analyze_nf
from cniprof.analysis.summary import Analysis, analyze, json_number, summary_dict


@dataclass(frozen=True)
class TraceRecord:
    """What one trace leaves behind: the raw in-kernel aggregates and the facts of the run, nothing derived."""

    cni: str
    mode: str
    path: str
    snapshot: Mapping[str, Any]  # the hop probe's last snapshot (cniprof.probes.hops)
    duration_s: float
    traffic: Mapping[str, Any] = field(default_factory=dict)  # the generator's printed numbers, with its tool
    probes: tuple[str, ...] = ()  # attach points of the hop programs, e.g. tp_btf/net_dev_queue
    sampling: Mapping[str, Any] = field(default_factory=dict)  # {mode, every, calibration_s?, candidates?, budget_per_s?}
    cpu: Mapping[str, Any] | None = None  # the CPU sampler's last snapshot (--cpu)
    nf: Mapping[str, Any] | None = None  # the netfilter probe's last snapshot (--nf)
    nodestate: Mapping[str, Any] | None = None  # cniprof.node.state.window
    service: Mapping[str, Any] | None = None  # pod-to-service: the kube-proxy service traced through
    injections: tuple[str, ...] = ()  # problems `lab inject` put into the lab
    where: str = ""  # "lab built and removed", "lab reused, left up", "live node ..."
    command: str | None = None  # the command line that traced
    cluster: Mapping[str, Any] | None = None  # trace --k8s: server version, nodes (kernel, arch, CNI), pods
    started: str | None = None  # when the trace began, local time with its UTC offset (2026-12-06T01:34:54+0000)
    # what the probe cost and how much of the run it covered (cniprof.probes.duty status + attach_s)
    overhead: Mapping[str, Any] | None = None
    kernel: str = field(default_factory=platform.release)
    arch: str = field(default_factory=platform.machine)
    cniprof_version: str = __version__

    @property
    def spec(self) -> str:
        return f"{self.cni}:{self.mode}"

    @property
    def sample_every(self) -> int:
        return int(self.sampling.get("every") or 1)

    @property
    def title(self) -> str:
        return f"cniprof · {self.cni} {self.mode} · {self.path} · {self.traffic.get('tool') or 'none'}"


@dataclass(frozen=True)
class TraceAnalysis:
    """Every table, block and finding of one record."""

    tables: Analysis  # hop table (with the CPU columns under --cpu), drops, end-to-end, reconciliation
    check: path_check.PathCheck | None  # None for a snapshot without the planner's labels
    cpu: CpuAnalysis | None
    nf: NfAnalysis | None
    summary: dict[str, Any]  # summary.json
    findings: list[Finding]

    @property
    def e2e_mean_us(self) -> dict[str, float]:
        return dict(zip(self.tables.e2e["direction"], self.tables.e2e["mean_us"]))


def summary_extra(record: TraceRecord) -> dict[str, Any]:
    """The record's facts that summary.json carries beside the analysis (what load_record reads back)."""
    extra: dict[str, Any] = {"path": record.path, "sampling": dict(record.sampling),
                             "generator": {k: json_number(v) for k, v in record.traffic.items()
                                           if v is None or isinstance(v, (bool, int, float, str))}}
    if record.service is not None:
        extra["service"] = dict(record.service)
    if record.injections:
        extra["injections"] = list(record.injections)
    if record.overhead is not None:
        extra["overhead"] = dict(record.overhead)
    extra.update(where=record.where, command=record.command, started=record.started,
                 cniprof_version=record.cniprof_version)
    if record.cluster is not None:
        extra["cluster"] = dict(record.cluster)
    for key in ("clock", "agents"):  # node agents (trace --agents per-node): the offset, and any agent lost
        if record.snapshot.get(key) is not None:
            extra[key] = record.snapshot[key]
    return extra


def analyze_record(record: TraceRecord) -> TraceAnalysis:
    """The one analysis of a run: tables, CPU and netfilter blocks, summary.json, path check, findings."""
    tables = analyze(record.snapshot)
    cpu = None
    if record.cpu is not None:
        cpu = analyze_cpu(record.cpu, tables.hops, traffic_bytes(record.traffic), record.sample_every)
        tables = with_cpu(tables, cpu)
    nf = analyze_nf(record.nf) if record.nf is not None else None
    check = path_check.check(record.snapshot) if is_labelled(record.snapshot) else None
    extra = summary_extra(record)
    if nf is not None:
        extra["netfilter"] = nf_analysis.summary(nf)
    if cpu is not None:
        extra["cpu"] = cpu.summary
    summary = summary_dict(tables, cni=record.cni, mode=record.mode, duration_s=record.duration_s,
                           traffic=record.traffic, probes=record.probes, kernel=record.kernel, arch=record.arch,
                           extra=extra)
    summary["path_check"] = check.to_dict() if check is not None else None
    findings = advise_run(RunData(Path("."), summary, tables.hops, tables.drops,
                                  nf.hooks if nf is not None else None,
                                  dict(record.nodestate) if record.nodestate is not None else None,
                                  cpu_samples=samples_of(dict(record.cpu) if record.cpu is not None else None)))
    return TraceAnalysis(tables, check, cpu, nf, summary, findings)


def record_from_files(summary: Mapping[str, Any], snapshot: Mapping[str, Any], cpu: Mapping[str, Any] | None,
                      nf: Mapping[str, Any] | None, nodestate: Mapping[str, Any] | None) -> TraceRecord:
    """A record rebuilt from an export's summary.json and raw snapshots (the inverse of summary_extra)."""
    traffic = dict(summary.get("generator") or summary.get("traffic") or {})
    return TraceRecord(
        cni=str(summary.get("cni") or ""), mode=str(summary.get("mode") or ""),
        path=str(summary.get("path") or "cross-node"), snapshot=snapshot,
        duration_s=float(summary.get("duration_s") or snapshot.get("elapsed_s") or 0.0), traffic=traffic,
        probes=tuple(summary.get("probes") or ()), sampling=dict(summary.get("sampling") or {}), cpu=cpu, nf=nf,
        nodestate=nodestate, service=summary.get("service"), injections=tuple(summary.get("injections") or ()),
        where=str(summary.get("where") or ""), command=summary.get("command"), started=summary.get("started"),
        overhead=summary.get("overhead"), cluster=summary.get("cluster"),
        kernel=str(summary.get("kernel") or ""), arch=str(summary.get("arch") or ""),
        cniprof_version=str(summary.get("cniprof_version") or ""))
