# SPDX-License-Identifier: Apache-2.0
"""The one export of a traced run, and reading it back.

`export_trace(out_dir, record)` writes every file a run has, whichever command traced it (`trace --export`, each
model of `trace --cni a,b --export`, each run of a study, the overhead benchmark):

  hops.csv/.parquet   one row per hop per direction (cniprof.analysis.hops columns; + CPU columns under --cpu)
  drops.csv           point, node, device, reason, count
  summary.json        the run's facts and summary (analysis.record.analyze_record), path_check included
  snapshot.json       the hop probe's raw in-kernel aggregates (everything above is computed from it)
  nodestate.json      devices, counters and CPU state over the window (when recorded)
  hops-flame.svg      the packet path flame-style
  cpu.json, cpu.folded, cpu.speedscope.json, cpu.svg     with the CPU sampler
  nf.csv, nf.json     with the netfilter probe
  findings.json, findings.csv                            the ranked findings (cniprof.advise)

The files are written into a staging directory beside `out_dir` and moved in when all are complete, so an
interrupted export leaves no half-written directory; `load_record(dir)` rebuilds the record from the raw files,
so `cniprof report DIR` re-analyses any export without root.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lazy_loader

from cniprof import runfiles
from cniprof.advise import render
from cniprof.analysis.compare import COMPARE_CSV, Skipped
from cniprof.analysis.record import TraceAnalysis, TraceRecord, analyze_record, record_from_files
from cniprof.errors import UsageError
from cniprof.files import fresh_sibling, writable_dir, write_json, write_text
from cniprof.report.cpu_profile import (
    CPU_FOLDED,
    CPU_JSON,
    CPU_SPEEDSCOPE,
    CPU_SVG,
    fold,
    folded_text,
    speedscope,
)
from cniprof.report.flame_svg import flame_svg, hop_flame_svg

if TYPE_CHECKING:
    import pandas as pd
else:  # imported on first use: a command that does not need it does not wait for it
    pd = lazy_loader.load("pandas")

HOPS_CSV = "hops.csv"
HOPS_PARQUET = "hops.parquet"
DROPS_CSV = "drops.csv"
SUMMARY_JSON = "summary.json"
SNAPSHOT_JSON = "snapshot.json"
NODESTATE_JSON = "nodestate.json"
HOPS_FLAME_SVG = "hops-flame.svg"
NF_CSV = "nf.csv"
NF_JSON = "nf.json"

DROPS_EXPORT_COLUMNS = ["point", "node", "device", "reason", "count"]


def export_trace(out_dir: str | os.PathLike[str], record: TraceRecord,
                 analysis: TraceAnalysis | None = None) -> dict[str, Path]:
    """Write every file of the run into out_dir (created if needed); returns {file name: final path}.

    Pass the `analysis` the caller printed from, so the files show the same numbers (computed here otherwise)."""
    analysis = analysis or analyze_record(record)
    out = writable_dir(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = fresh_sibling(out, ".partial")
    try:
        staging.mkdir()
        staging.chmod(0o755)  # whatever the umask: the export is readable to anyone once renamed
        names = _write_all(staging, record, analysis, ".")  # the findings' source: this directory
        return _move_in(staging, out, names)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already when it became out_dir


def _write_all(out: Path, record: TraceRecord, analysis: TraceAnalysis, source: str) -> list[str]:
    tables = analysis.tables
    hops = tables.hops.reset_index(drop=True)
    hops.to_csv(out / HOPS_CSV, index=False)
    hops.to_parquet(out / HOPS_PARQUET, index=False)
    tables.drops.reindex(columns=DROPS_EXPORT_COLUMNS).to_csv(out / DROPS_CSV, index=False)
    write_json(out / SUMMARY_JSON, analysis.summary)
    write_json(out / SNAPSHOT_JSON, record.snapshot)
    names = [HOPS_CSV, HOPS_PARQUET, DROPS_CSV, SUMMARY_JSON, SNAPSHOT_JSON]
    if record.nodestate is not None:
        write_json(out / NODESTATE_JSON, record.nodestate)
        names.append(NODESTATE_JSON)
    if record.cpu is not None:
        write_text(out / CPU_JSON, json.dumps(record.cpu, indent=1, allow_nan=False) + "\n")
        names.append(CPU_JSON)
    if analysis.nf is not None and record.nf is not None:
        analysis.nf.hooks.to_csv(out / NF_CSV, index=False, float_format="%.3f")
        write_json(out / NF_JSON, record.nf)
        names += [NF_CSV, NF_JSON]
    return names + write_views(out, record, analysis, source)


def write_views(out: Path, record: TraceRecord, analysis: TraceAnalysis, source: str) -> list[str]:
    """What is drawn from the raw files (flames, findings): written by the export and again by `cniprof report`."""
    write_text(out / HOPS_FLAME_SVG, hop_flame_svg(analysis.tables.hops, analysis.e2e_mean_us,
                                                   title=f"{record.title} · packet path"))
    names = [HOPS_FLAME_SVG]
    if record.cpu is not None:
        names += _write_cpu(out, record.cpu, record.title)
    names += [p.name for p in render.write(out, analysis.findings, source, "trace").values()]
    return names


def _write_cpu(out: Path, cpu: Mapping[str, Any], title: str) -> list[str]:
    folded = fold(cpu)
    write_text(out / CPU_FOLDED, folded_text(folded))
    write_text(out / CPU_SPEEDSCOPE, json.dumps(speedscope(cpu, name=title), allow_nan=False) + "\n")
    sub = (f"{sum(folded.values()):,} busy samples at {cpu.get('freq_hz')} Hz on {len(cpu.get('cpus') or ())} "
           "CPUs · width = samples · colors = datapath components · hover for details")
    write_text(out / CPU_SVG, flame_svg(folded, title=f"{title} · CPU", subtitle=sub))
    return [CPU_FOLDED, CPU_SPEEDSCOPE, CPU_SVG]


def _move_in(staging: Path, out: Path, names: list[str]) -> dict[str, Path]:
    """All files at once where possible (a new directory is one rename); into an existing one file by file."""
    if not out.exists():
        try:
            staging.rename(out)
            return {name: out / name for name in names}
        except OSError:
            pass  # created meanwhile, or another file system: fall back to moving each file
    if not out.is_dir():
        raise UsageError(f"cannot export to {out}: it is not a directory")
    for name in names:
        os.replace(staging / name, out / name)
    return {name: out / name for name in names}


def is_trace_export(root: Path) -> bool:
    return (root / SUMMARY_JSON).is_file() and (root / SNAPSHOT_JSON).is_file()


def load_record(root: str | os.PathLike[str]) -> TraceRecord:
    """The record an export was written from (summary.json for the facts, the raw snapshots for the rest)."""
    path = Path(root)
    if not is_trace_export(path):
        raise UsageError(f"{path} is not a trace export (needs summary.json and snapshot.json from "
                         "`cniprof trace --export`)")
    summary = runfiles.load_json(path / SUMMARY_JSON, runfiles.TRACE_SUMMARY, required=True)
    snapshot = runfiles.load_json(path / SNAPSHOT_JSON, runfiles.HOPS, required=True)
    return record_from_files(summary, snapshot, runfiles.load_json(path / CPU_JSON, runfiles.CPU),
                             runfiles.load_json(path / NF_JSON, runfiles.NF),
                             runfiles.load_json(path / NODESTATE_JSON, runfiles.NODE_STATE))


def read_hops(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / HOPS_CSV)


def is_comparison_export(root: Path) -> bool:
    return (root / COMPARE_CSV).is_file()


def load_comparison(root: Path) -> tuple[list[tuple[str, TraceRecord]], list[Skipped]]:
    """A `trace --cni a,b --export` directory: each traced model's record (compare.csv's order) and the skipped."""
    try:
        rows = pd.read_csv(root / COMPARE_CSV, keep_default_na=False)
    except (OSError, ValueError) as e:
        raise UsageError(f"{root / COMPARE_CSV}: not readable ({str(e).splitlines()[0]})") from None
    if not {"model", "status", "note"} <= set(rows.columns):
        raise UsageError(f"{root / COMPARE_CSV} is not a cniprof comparison (needs model, status and note columns)")
    records, skipped = [], []
    for spec, group in rows.groupby("model", sort=False):
        if (group["status"] == "skipped").any():
            skipped.append(Skipped(str(spec), str(group["note"].iloc[0])))
        else:
            records.append((str(spec), load_record(root / model_dir(str(spec)))))
    return records, skipped


def model_dir(spec: str) -> str:
    """The directory of one model in a comparison export (flannel:vxlan -> flannel-vxlan)."""
    return spec.replace(":", "-")
