# SPDX-License-Identifier: Apache-2.0
"""What `cniprof report DIR` reads, from files only (no root, no kernel): a trace export, a comparison
(`trace --cni A,B --export`), a study (`cniprof run`) or a tune run, or a trace export that tune wrote into.

`load(dir)` says which it is and reads each part once; the HTML page, report.md, the PNG flames and the bundle are
all rendered from the RunDir it returns, so they show the same numbers.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from cniprof.advise.engine import advise_run
from cniprof.advise.finding import Finding
from cniprof.advise.load import load_run
from cniprof.advise.render import FINDINGS_JSON
from cniprof.errors import UsageError
from cniprof.report import study as study_report
from cniprof.report import tune as tune_report
from cniprof.report.flames import CPU_FOLDED, CPU_JSON
from cniprof.report.folded import fold, parse_folded
from cniprof.report.units import DASH, fmt_compared

TRACE, COMPARISON, STUDY, TUNE = "trace", "comparison", "study", "tune"
COMPARE_CSV = "compare.csv"


@dataclass
class TraceDir:
    """One trace export: summary.json, hops.csv, drops.csv (+ nf.csv, cpu.json or cpu.folded, findings)."""

    root: Path
    name: str  # "" for the directory itself, the sub-directory's name in a comparison
    summary: dict[str, Any]
    hops: pd.DataFrame
    drops: pd.DataFrame
    nf: pd.DataFrame | None
    folded: Counter[tuple[str, ...]] | None  # busy CPU samples per stack (idle left out), None without --cpu
    cpu_freq_hz: float | None
    findings: list[Finding]

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
    compare: pd.DataFrame | None = None  # compare.csv
    study: study_report.Study | None = None
    study_findings: list[Finding] = field(default_factory=list)
    tune: pd.DataFrame | None = None  # tune.csv
    tune_meta: dict[str, Any] = field(default_factory=dict)  # tune.json

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
            return f"cniprof · {self.trace.spec} · {(self.trace.summary.get('traffic') or {}).get('tool') or 'no traffic'}"
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


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UsageError(f"{path}: not readable JSON: {e}".splitlines()[0]) from None


def _cpu(root: Path) -> tuple[Counter[tuple[str, ...]] | None, float | None]:
    """Busy samples per stack from cpu.json (the symbolized snapshot), else from cpu.folded."""
    if (root / CPU_JSON).is_file():
        cpu = _json(root / CPU_JSON)
        return fold(cpu), cpu.get("freq_hz")
    if (root / CPU_FOLDED).is_file():
        return parse_folded((root / CPU_FOLDED).read_text(encoding="utf-8")), None
    return None, None


def _findings(root: Path) -> list[Finding]:
    """findings.json as trace or `cniprof advise` wrote it, else computed now from the run's files."""
    saved = root / FINDINGS_JSON
    if saved.is_file():
        try:
            return [Finding.from_dict(d) for d in _json(saved).get("findings", [])]
        except (KeyError, TypeError, AttributeError):
            pass  # an older or hand-edited file: compute it again
    return advise_run(load_run(root))


def load_trace(root: Path, name: str = "") -> TraceDir:
    run = load_run(root)  # summary.json + hops.csv or one UsageError line
    folded, freq = _cpu(root)
    return TraceDir(root, name, run.summary, run.hops, run.drops, run.nf, folded, freq, _findings(root))


def is_trace(root: Path) -> bool:
    return (root / "summary.json").is_file() and (root / "hops.csv").is_file()


def _comparison_dirs(root: Path, table: pd.DataFrame) -> list[TraceDir]:
    """The per-model exports (`<cni>-<mode>/`), in the comparison's model order."""
    dirs = [d for d in sorted(root.iterdir()) if d.is_dir() and not d.is_symlink() and is_trace(d)]
    loaded = [load_trace(d, d.name) for d in dirs]
    order = {m: i for i, m in enumerate(dict.fromkeys(table.get("model", ())))}
    return sorted(loaded, key=lambda t: order.get(t.spec, len(order)))


def load(root: str | Path) -> RunDir:
    """The run directory at root, or UsageError (one line) saying what a run directory holds."""
    path = Path(root)
    if not path.is_dir():
        raise UsageError(f"{path} is not a directory")
    tune = tune_report.load(path)
    tune_meta = tune_report.meta(path) if tune is not None else {}
    if (path / "metadata.json").is_file():
        data = study_report.load(path)
        return RunDir(path, STUDY, study=data, study_findings=study_report.findings(data), tune=tune,
                      tune_meta=tune_meta)
    if (path / COMPARE_CSV).is_file():
        try:
            table = pd.read_csv(path / COMPARE_CSV)
        except (OSError, ValueError) as e:
            raise UsageError(f"{path / COMPARE_CSV}: cannot read it: {e}".splitlines()[0]) from None
        return RunDir(path, COMPARISON, models=_comparison_dirs(path, table), compare=table)
    if is_trace(path):
        return RunDir(path, TRACE, trace=load_trace(path), tune=tune, tune_meta=tune_meta)
    if tune is not None:
        return RunDir(path, TUNE, tune=tune, tune_meta=tune_meta)
    raise UsageError(f"{path} is not a cniprof run directory: it needs summary.json and hops.csv (`cniprof trace "
                     "--export`), compare.csv (`trace --cni A,B --export`), metadata.json (`cniprof run`) or "
                     "tune.csv (`cniprof tune`)")
