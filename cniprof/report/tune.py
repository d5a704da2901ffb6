# SPDX-License-Identifier: Apache-2.0
"""`cniprof tune` results in a run directory: tune.csv (every run's printed numbers), tune.json (the effects and
how they were measured), and the before/after graph; re-rendered by `cniprof report` from tune.csv alone.

Why the effects are recomputed from tune.csv (as the study table is from results.csv): the graph and the table can
never disagree with the raw numbers beside them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lazy_loader
from rich.table import Table
from rich.text import Text

from cniprof import runfiles
from cniprof.analysis import paired
from cniprof.files import write_json, write_text
from cniprof.report.graphs import _save, plt
from cniprof.report.study import fmt

if TYPE_CHECKING:
    import pandas as pd
else:  # imported on first use: a command that does not need it does not wait for it
    pd = lazy_loader.load("pandas")

TUNE_CSV = "tune.csv"
TUNE_JSON = "tune.json"
STYLE = {paired.HELPS: "green", paired.HURTS: "red", paired.NO_EFFECT: "yellow"}


def effects(runs: pd.DataFrame) -> list[dict[str, Any]]:
    """One row per (tuning, generator): medians, gain, CI and verdict over its pairs."""
    out = []
    for (tuning, generator), g in runs.groupby(["tuning", "generator"], sort=False):
        metric = g["metric"].iloc[0]
        higher = bool(g["higher_is_better"].iloc[0])
        by_pair = g.pivot_table(index="pair", columns="arm", values=metric, aggfunc="first")
        base = [_num(v) for v in by_pair.get(paired.BASELINE, pd.Series(dtype=float))]
        tuned = [_num(v) for v in by_pair.get(paired.TUNED, pd.Series(dtype=float))]
        n = min(len(base), len(tuned))
        e = paired.effect(base[:n], tuned[:n], higher)
        out.append({"tuning": tuning, "generator": generator, "tool": g["tool"].iloc[0], "metric": metric,
                    "higher_is_better": higher, "path": str(g["path"].iloc[0]) if "path" in g else "", **vars(e)})
    return out


def _num(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _gain(v: float | None) -> str:
    return "-" if v is None else f"x{v:.3f}"


def rich_table(rows: list[dict[str, Any]], title: str = "tune: paired before/after") -> Table:
    t = Table(title=title, title_justify="left")
    for col in ("tuning", "path", "generator", "metric", "baseline median", "tuned median", "gain median",
                "95 % CI", "pairs", "verdict"):
        t.add_column(col, justify="left" if col in ("tuning", "path", "generator", "metric", "verdict") else "right")
    for r in rows:
        ci = "-" if r["ci_low"] is None else f"{_gain(r['ci_low'])} .. {_gain(r['ci_high'])}"
        pairs_text = str(r["pairs"]) + (f" ({r['dropped']} dropped)" if r["dropped"] else "")
        t.add_row(r["tuning"], r.get("path") or "-", r["generator"], r["metric"], fmt(r["metric"], r["baseline_median"]),
                  fmt(r["metric"], r["tuned_median"]), _gain(r["gain_median"]), ci, pairs_text,
                  Text(r["verdict"], style=STYLE.get(r["verdict"], "")))
    t.caption = f"gain = tuned / baseline (baseline / tuned for latency); {paired.CI_METHOD}"
    return t


def graph(runs: pd.DataFrame, rows: list[dict[str, Any]], out: Path, name: str = "tune") -> list[Path]:
    """One panel per tuning: each pair's baseline and tuned value joined by a line, the medians as bars."""
    if not rows:
        return []
    fig, axes = plt.subplots(1, len(rows), figsize=(max(6.0, 3.6 * len(rows) + 0.6), 4.2), squeeze=False)
    for ax, r in zip(axes[0], rows):
        g = runs[(runs["tuning"] == r["tuning"]) & (runs["generator"] == r["generator"])]
        by_pair = g.pivot_table(index="pair", columns="arm", values=r["metric"], aggfunc="first")
        scale, unit = _scale(r["metric"])
        meds = [r["baseline_median"] or 0.0, r["tuned_median"] or 0.0]
        ax.bar([0, 1], [m / scale for m in meds], 0.55, color=["0.6", "tab:blue"], alpha=0.5)
        for _, p in by_pair.iterrows():
            ys = [p.get(paired.BASELINE), p.get(paired.TUNED)]
            if all(pd.notna(y) for y in ys):
                ax.plot([0, 1], [y / scale for y in ys], marker="o", color="0.25", linewidth=0.8, markersize=3)
        ax.set_xticks([0, 1], [paired.BASELINE, r["tuning"]])
        ax.set_ylabel(f"{r['metric']} ({unit})")
        ci = "" if r["ci_low"] is None else f"\nCI {r['ci_low']:.3f}..{r['ci_high']:.3f}"
        ax.set_title(f"{r['tuning']} ({r['generator']}): {_gain(r['gain_median'])}{ci}\n{r['verdict']}",
                     fontsize="small")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Tuning before/after: each line is one pair (ABBA order), bars the medians", fontsize="medium",
                 y=1.12)
    return _save(fig, out, name)


def _scale(metric: str) -> tuple[float, str]:
    if metric.endswith("_bps"):
        return 1e9, "Gbit/s"
    if metric.endswith("_us"):
        return 1.0, "µs"
    if metric.endswith("_per_s"):
        return 1.0, "/s"
    return 1.0, ""


def write(out: Path, runs: pd.DataFrame, meta: dict[str, Any]) -> tuple[list[dict[str, Any]], list[Path]]:
    """tune.csv, tune.json and the graph into out; returns (effects, files written)."""
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / TUNE_CSV, runs.to_csv(index=False))
    rows = effects(runs) if not runs.empty else []
    write_json(out / TUNE_JSON, {**meta, "ci_method": paired.CI_METHOD, "effects": rows})
    return rows, [out / TUNE_CSV, out / TUNE_JSON, *graph(runs, rows, out)]


def load(run_dir: Path) -> pd.DataFrame | None:
    """tune.csv of a run directory, or None when it has none."""
    return runfiles.load_csv(Path(run_dir) / TUNE_CSV, runfiles.TUNE_TABLE)


def meta(run_dir: Path) -> dict[str, Any]:
    try:
        return runfiles.parse_json((Path(run_dir) / TUNE_JSON).read_text())
    except (OSError, ValueError):
        return {}
