# SPDX-License-Identifier: Apache-2.0
"""The run directory of a study: everything the report needs, readable without root.

Why rewritten after every run: a study takes minutes to hours; an interrupted one still leaves a valid directory
with the runs done so far (metadata `status` says whether it finished).

  metadata.json          schema version, scenario (name, file, text), environment (kernel, arch, CPU model,
                         cniprof and tool versions), start/end, status, skipped combinations, failed runs
  results.csv/.parquet   one row per (run, metric): the numbers the generators printed
  stats.csv/.parquet     median, mean, 95 % CI and the spread flag per (model, path, variant, generator, metric)
  hops.csv/.parquet      every run's hop table (cniprof.analysis), with the run's keys
  cpu.csv/.parquet       with `cpu: true`: every run's CPU table (per component: share of busy CPU, µs per
                         packet; per CPU: NET_RX/NET_TX softirq %), with the run's keys
  runs/<run_id>/         per-run trace export (snapshot.json, hops.csv, summary.json, ...) and result.json
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lazy_loader

from cniprof import __version__
from cniprof.analysis.stats import KEYS, stats_table
from cniprof.files import replacing, write_json

if TYPE_CHECKING:
    import pandas as pd
else:  # imported on first use: a command that does not need it does not wait for it
    pd = lazy_loader.load("pandas")

SCHEMA_VERSION = 1
RESULT_COLUMNS = ["run_id", *KEYS, "tool", "repetition", "metric", "value", "primary", "higher_is_better"]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def tool_version(argv: list[str]) -> str | None:
    """First line a tool prints for its version, or None when it is missing."""
    if not shutil.which(argv[0]):
        return None
    try:
        out = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.stdout + out.stderr)
    return next((line.strip() for line in text.splitlines() if line.strip()), None)


def environment() -> dict[str, Any]:
    uname = os.uname()
    return {
        "kernel": uname.release,
        "arch": uname.machine,
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count(),
        "hostname": uname.nodename,
        "python": platform.python_version(),
        "cniprof_version": __version__,
        "tools": {name: tool_version(argv) for name, argv in {
            "iperf3": ["iperf3", "--version"], "sockperf": ["sockperf", "--version"], "wrk": ["wrk", "-v"],
            "nginx": ["nginx", "-v"], "ping": ["ping", "-V"]}.items()},
    }


def _write_table(df: pd.DataFrame, base: Path) -> None:
    with replacing(base.with_suffix(".csv")) as tmp:
        df.to_csv(tmp, index=False)
    with replacing(base.with_suffix(".parquet")) as tmp:
        df.to_parquet(tmp, index=False)


class RunArchive:
    """Accumulates a study's rows and keeps the directory's files current."""

    def __init__(self, root: Path, scenario_meta: dict[str, Any], max_spread_pct: float) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "runs").mkdir(exist_ok=True)
        self.max_spread_pct = max_spread_pct
        self.results: list[dict[str, Any]] = []
        self.hops: list[pd.DataFrame] = []
        self.cpu: list[pd.DataFrame] = []
        self.meta: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION, "scenario": scenario_meta, "environment": environment(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "finished": None, "status": "running",
            "max_spread_pct": max_spread_pct, "skipped": [], "failed": [], "runs": []}
        self.write()

    def run_dir(self, run_id: str) -> Path:
        path = self.root / "runs" / run_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def add(self, run: dict[str, Any], values: dict[str, float | None], primary: str, higher: bool,
            hops: pd.DataFrame | None, cpu: pd.DataFrame | None = None) -> None:
        keys = {k: run[k] for k in ("run_id", *KEYS, "tool", "repetition")}
        for metric, value in values.items():
            self.results.append({**keys, "metric": metric, "value": None if value is None else float(value),
                                 "primary": metric == primary, "higher_is_better": higher})
        if hops is not None and not hops.empty:
            self.hops.append(hops.assign(**keys))
        if cpu is not None and not cpu.empty:
            self.cpu.append(cpu.assign(**keys))
        self.meta["runs"].append(run)
        write_json(self.run_dir(run["run_id"]) / "result.json", {**run, "metrics": values}, default=str)
        self.write()

    def fail(self, run: dict[str, Any], error: str) -> None:
        self.meta["failed"].append({**run, "error": error})
        self.write()

    def skip(self, what: dict[str, Any]) -> None:
        self.meta["skipped"].append(what)

    def write(self, status: str | None = None) -> None:
        if status is not None:
            self.meta["status"] = status
            self.meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        results = pd.DataFrame(self.results, columns=RESULT_COLUMNS)
        _write_table(results, self.root / "results")
        _write_table(stats_table(results, self.max_spread_pct), self.root / "stats")
        if self.hops:
            _write_table(pd.concat(self.hops, ignore_index=True), self.root / "hops")
        if self.cpu:
            _write_table(pd.concat(self.cpu, ignore_index=True), self.root / "cpu")
        write_json(self.root / "metadata.json", self.meta, default=str)
