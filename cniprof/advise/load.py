# SPDX-License-Identifier: Apache-2.0
"""Read what the rules need from a trace export dir or a study run dir (files only: no root, no kernel)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lazy_loader

from cniprof import runfiles
from cniprof.errors import UsageError

if TYPE_CHECKING:
    import pandas as pd
else:  # imported on first use: a command that does not need it does not wait for it
    pd = lazy_loader.load("pandas")


@dataclass
class RunData:
    """One traced run. Missing files are None/empty: each rule uses what is there."""

    root: Path
    summary: dict[str, Any]
    hops: pd.DataFrame
    drops: pd.DataFrame
    nf: pd.DataFrame | None = None
    nodestate: dict[str, Any] | None = None
    generator: dict[str, Any] = field(default_factory=dict)  # study runs: the generator's metrics
    cpu_samples: list[dict[str, Any]] | None = None  # cpu.json samples without stacks (tgid, cpu, softirq, ns)

    @property
    def cni(self) -> str:
        return str(self.summary.get("cni") or "")

    @property
    def mode(self) -> str:
        return str(self.summary.get("mode") or "")

    @property
    def cpu(self) -> dict[str, Any] | None:
        return self.summary.get("cpu")


def is_study(root: Path) -> bool:
    return (root / "metadata.json").is_file()


def load_run(root: str | Path, generator: dict[str, Any] | None = None) -> RunData:
    """A trace export directory (summary.json and hops.csv at least)."""
    path = Path(root)
    if not ((path / "summary.json").is_file() and (path / "hops.csv").is_file()):
        raise UsageError(f"{path} is not a cniprof run directory (needs summary.json and hops.csv from "
                         f"`cniprof trace --export`, or metadata.json from `cniprof run`)")
    summary = runfiles.load_json(path / "summary.json", runfiles.TRACE_SUMMARY, required=True)
    hops = runfiles.load_csv(path / "hops.csv", runfiles.HOPS_TABLE, required=True)
    drops = runfiles.load_csv(path / "drops.csv", runfiles.DROPS_TABLE)
    cpu = runfiles.load_json(path / "cpu.json", runfiles.CPU)
    return RunData(path, summary, hops, drops if drops is not None else pd.DataFrame(columns=["count"]),
                   runfiles.load_csv(path / "nf.csv", runfiles.NF_TABLE),
                   runfiles.load_json(path / "nodestate.json", runfiles.NODE_STATE), dict(generator or {}),
                   samples_of(cpu))


def samples_of(cpu_snapshot: dict[str, Any] | None) -> list[dict[str, Any]] | None:
    """The CPU snapshot's samples reduced to what the softirq rule reads (stacks are not needed)."""
    if not cpu_snapshot:
        return None
    return [{"tgid": s.get("tgid"), "cpu": s.get("cpu"), "softirq": s.get("softirq"),
             "period_ns": s.get("period_ns") or 0} for s in cpu_snapshot.get("samples") or ()]


@dataclass
class StudyRuns:
    """A study's traced runs grouped by (model, path, variant), in run order."""

    root: Path
    metadata: dict[str, Any]
    groups: dict[tuple[str, str, str], list[RunData]]
    untraced: int = 0


def load_study(root: str | Path) -> StudyRuns:
    path = Path(root)
    meta = runfiles.load_json(path / "metadata.json", runfiles.STUDY) or {}
    results = runfiles.load_csv(path / "results.csv", runfiles.RESULTS_TABLE)
    metrics: dict[str, dict[str, Any]] = {}
    if results is not None and len(results):
        for run_id, rows in results.groupby("run_id"):
            metrics[str(run_id)] = dict(zip(rows["metric"], rows["value"]))
    groups: dict[tuple[str, str, str], list[RunData]] = {}
    untraced = 0
    for rec in meta.get("runs", []):
        run_dir = path / "runs" / str(rec.get("run_id"))
        if not (run_dir / "summary.json").is_file():
            untraced += 1
            continue
        gen = {"tool": rec.get("tool"), **metrics.get(str(rec.get("run_id")), {})}
        key = (str(rec.get("model")), str(rec.get("path")), str(rec.get("variant")))
        groups.setdefault(key, []).append(load_run(run_dir, gen))
    return StudyRuns(path, meta, groups, untraced)
