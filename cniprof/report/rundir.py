# SPDX-License-Identifier: Apache-2.0
"""What `cniprof report DIR` reads, from files only (no root, no kernel): a trace export, a comparison
(`trace --cni A,B --export`), a study (`cniprof run`) or a tune run, or a trace export that tune wrote into.

`load(dir)` says which it is and reads each part once; the HTML page, report.md, the PNG flames and the bundle are
all rendered from the RunDir it returns, so they show the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from cniprof.advise.finding import Finding
from cniprof.analysis.compare import Comparison, Entry, compare
from cniprof.analysis.record import TraceAnalysis, TraceRecord, analyze_record
from cniprof.errors import UsageError
from cniprof.report import study as study_report
from cniprof.report import tune as tune_report
from cniprof.report.cpu_profile import fold
from cniprof.report.export import (
    is_comparison_export,
    is_trace_export,
    load_comparison,
    load_record,
    model_dir,
)
from cniprof.report.units import DASH, fmt_compared

TRACE, COMPARISON, STUDY, TUNE = "trace", "comparison", "study", "tune"


@dataclass
class TraceDir:
    """One trace export, re-analysed from its raw snapshots (report.export.load_record, analysis.record)."""

    root: Path
    name: str  # "" for the directory itself, the model's sub-directory in a comparison
    summary: dict[str, Any]  # summary.json as the analysis gives it
    hops: pd.DataFrame
    drops: pd.DataFrame
    nf: pd.DataFrame | None
    folded: Mapping[tuple[str, ...], float] | None  # busy CPU samples per stack (idle left out), None without --cpu
    cpu_freq_hz: float | None
    findings: list[Finding]
    record: TraceRecord | None = None
    analysis: TraceAnalysis | None = None

    @property
    def spec(self) -> str:
        s = self.summary
        return f"{s.get('cni')}:{s.get('mode')}" if s.get("mode") else str(s.get("cni"))

    @property
    def directions(self) -> list[str]:
        """Forward (the generator's sending direction) first, then the others in hops.csv order."""
        fwd = (self.summary.get("end_to_end") or {}).get("direction")
        seen = list(dict.fromkeys(str(d) for d in self.hops.get("direction", ())))
        return ([fwd] if fwd in seen else []) + [d for d in seen if d != fwd]

    @property
    def nodes(self) -> list[str]:
        col = self.hops.get("node")
        return sorted({str(n) for n in col.dropna()}) if col is not None else []


@dataclass
class RunDir:
    root: Path
    kind: str  # trace | comparison | study | tune
    trace: TraceDir | None = None  # a trace export (also a tune run written into one)
    models: list[TraceDir] = field(default_factory=list)  # a comparison's per-model exports, in compare.csv order
    comparison: Comparison | None = None  # recomputed from the models' records (compare.csv's content)
    study: study_report.Study | None = None
    study_findings: list[Finding] = field(default_factory=list)
    tune: pd.DataFrame | None = None  # tune.csv
    tune_meta: dict[str, Any] = field(default_factory=dict)  # tune.json

    @property
    def compare(self) -> pd.DataFrame | None:
        """The comparison in compare.csv's long form."""
        return self.comparison.frame() if self.comparison is not None else None

    @property
    def traces(self) -> list[TraceDir]:
        return [self.trace] if self.trace is not None else list(self.models)

    @property
    def title(self) -> str:
        if self.kind == STUDY and self.study is not None:
            return f"cniprof · study {self.study.metadata.get('scenario', {}).get('name')}"
        if self.kind == COMPARISON:
            return "cniprof · comparison · " + ", ".join(t.spec for t in self.models)
        if self.kind == TRACE and self.trace is not None:
            s = self.trace.summary
            path = f"{s['path']} · " if s.get("path") else ""
            return f"cniprof · {self.trace.spec} · {path}{(s.get('traffic') or {}).get('tool') or 'no traffic'}"
        return f"cniprof · tune · {self.tune_meta.get('cni', '')}"

    @property
    def cnis(self) -> list[str]:
        """The CNIs the run is about, in order (for the bundle's name and the page's title)."""
        if self.study is not None:
            models = self.study.models
        elif self.traces:
            models = [t.spec for t in self.traces]
        else:
            models = [str(self.tune_meta.get("cni") or "lab")]
        return list(dict.fromkeys(m.split(":")[0] for m in models))


def compare_rows(table: pd.DataFrame) -> tuple[list[str], list[tuple[str, str, list[str]]]]:
    """compare.csv as the comparison prints it: the traced models, and per metric (section, label, cells)."""
    traced = table[table["status"] == "traced"]
    models = list(dict.fromkeys(traced["model"]))
    rows = []
    for (section, metric, unit), g in traced.groupby(["section", "metric", "unit"], sort=False, dropna=False):
        by = {r["model"]: r for _, r in g.iterrows()}
        cells = [fmt_compared(by[m]["value"], unit, by[m]["pct_of_host"]) if m in by else DASH for m in models]
        label = metric if section == "hop" or not isinstance(unit, str) or not unit else f"{metric} ({unit})"
        rows.append((str(section), str(label), cells))
    return models, rows


def load_trace(root: Path, name: str = "", record: TraceRecord | None = None,
               analysis: TraceAnalysis | None = None) -> TraceDir:
    """A trace export (its record read unless given) with everything the report shows, analysed once."""
    record = record or load_record(root)
    analysis = analysis or analyze_record(record)
    nf = analysis.nf.hooks if analysis.nf is not None else None
    cpu = record.cpu
    return TraceDir(root, name, analysis.summary, analysis.tables.hops, analysis.tables.drops, nf,
                    fold(cpu) if cpu is not None else None, cpu.get("freq_hz") if cpu is not None else None,
                    analysis.findings, record, analysis)


def _comparison(root: Path) -> tuple[list[TraceDir], Comparison]:
    records, skipped = load_comparison(root)
    models = [load_trace(root / model_dir(spec), model_dir(spec), record) for spec, record in records]
    entries = [Entry(t.spec, t.analysis.tables, t.record.traffic.get("throughput_bps"), t.record.sample_every)
               for t in models if t.record is not None and t.analysis is not None]
    return models, compare(entries, skipped)


def of_trace(root: Path, record: TraceRecord, analysis: TraceAnalysis) -> RunDir:
    """The trace just exported to root, from the record and analysis in hand (nothing read back)."""
    return RunDir(root, TRACE, trace=load_trace(root, "", record, analysis))


def load(root: str | Path) -> RunDir:
    """The run directory at root, or UsageError (one line) saying what a run directory holds."""
    path = Path(root)
    if not path.is_dir():
        raise UsageError(f"{path} is not a directory: name a trace export, a comparison, a study or a tune run")
    tune = tune_report.load(path)
    tune_meta = tune_report.meta(path) if tune is not None else {}
    if (path / "metadata.json").is_file():
        data = study_report.load(path)
        return RunDir(path, STUDY, study=data, study_findings=study_report.findings(data), tune=tune,
                      tune_meta=tune_meta)
    if is_trace_export(path):
        return RunDir(path, TRACE, trace=load_trace(path), tune=tune, tune_meta=tune_meta)
    if is_comparison_export(path):
        models, comparison = _comparison(path)
        return RunDir(path, COMPARISON, models=models, comparison=comparison)
    if tune is not None:
        return RunDir(path, TUNE, tune=tune, tune_meta=tune_meta)
    raise UsageError(f"{path} holds no cniprof run: expected summary.json + snapshot.json (a trace export), "
                     "compare.csv (a comparison), metadata.json (a study) or tune.csv (a tune run)")
