# SPDX-License-Identifier: Apache-2.0
"""A study's graphs as PNG and SVG (matplotlib, no display needed): throughput, latency and per-hop latency per
model, and tuning variants side by side when the study has more than one.

Why these four: throughput and latency say *which* model is slower; the per-hop stacked bars say *where* (which
device or kernel step adds the time), which is what cniprof exists to show; the variant graph is the before/after
of a tuning. Every bar is the median over repetitions, with the 95 % CI as an error bar when there are several.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lazy_loader

from cniprof.files import replacing
from cniprof.report.study import HOST, Study

if TYPE_CHECKING:
    import matplotlib.pyplot as plt
    import pandas as pd
else:  # imported on first use: a command that does not need it does not wait for it
    pd = lazy_loader.load("pandas")


class _Pyplot:
    """matplotlib.pyplot with the Agg backend (files only), imported on first use: `trace` imports this module
    through the report command's and attaches its probes before matplotlib has loaded (issue 15)."""

    def __getattr__(self, name: str) -> Any:
        importlib.import_module("matplotlib").use("Agg")  # must precede pyplot
        return getattr(importlib.import_module("matplotlib.pyplot"), name)


if not TYPE_CHECKING:
    plt = _Pyplot()

FORMATS = ("png", "svg")
LATENCY_TOOLS = ("ping", "sockperf", "wrk", "connect_rate")


def _save(fig: plt.Figure, out: Path, name: str) -> list[Path]:
    paths = []
    for fmt in FORMATS:
        path = out / f"{name}.{fmt}"
        with replacing(path) as tmp:  # whole or not at all, like every file cniprof writes
            fig.savefig(tmp, format=fmt, dpi=110, bbox_inches="tight",
                        metadata={"Date": None} if fmt == "svg" else None)
        paths.append(path)
    plt.close(fig)
    return paths


def _grouped(ax: plt.Axes, table: pd.DataFrame, groups: list[str], models: list[str], scale: float) -> None:
    """Grouped bars: one group per entry of groups (generator), one bar per model, CI as error bars."""
    width = 0.8 / max(1, len(models))
    for i, model in enumerate(models):
        xs, ys, lo, hi = [], [], [], []
        for g, group in enumerate(groups):
            row = table[(table["generator"] == group) & (table["model"] == model)]
            if row.empty:
                continue
            r = row.iloc[0]
            med = r["median"] / scale
            xs.append(g + (i - (len(models) - 1) / 2) * width)
            ys.append(med)
            has_ci = pd.notna(r["ci_low"]) and pd.notna(r["ci_high"])
            lo.append(max(0.0, med - r["ci_low"] / scale) if has_ci else 0.0)
            hi.append(max(0.0, r["ci_high"] / scale - med) if has_ci else 0.0)
        bars = ax.bar(xs, ys, width, label=model, yerr=[lo, hi], capsize=2,
                      color="0.4" if model == HOST else None)
        del bars
    ax.set_xticks(range(len(groups)), groups, rotation=20, ha="right")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small", ncols=2)


def _metric_graph(study: Study, out: Path, name: str, metric: str, tools: tuple[str, ...], scale: float,
                  ylabel: str, title: str) -> list[Path]:
    s = study.stats
    base = s[(s["metric"] == metric) & s["tool"].isin(tools)]
    if base.empty:
        return []
    paths: list[Path] = []
    for (path, variant), table in base.groupby(["path", "variant"], sort=False):
        groups = list(dict.fromkeys(table["generator"]))
        fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(groups) + 3), 4.2))
        _grouped(ax, table, groups, [m for m in study.models if m in set(table["model"])], scale)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title} ({path}{'' if variant == 'baseline' else ', ' + variant})")
        suffix = "" if (path, variant) == ("cross-node", "baseline") else f"-{path}-{variant}"
        paths += _save(fig, out, f"{name}{suffix}")
    return paths


def throughput(study: Study, out: Path) -> list[Path]:
    return _metric_graph(study, out, "throughput", "throughput_bps", ("iperf3", "wrk"), 1e9, "Gbit/s",
                         "Throughput per model (median over repetitions, 95 % CI)")


def latency(study: Study, out: Path) -> list[Path]:
    return _metric_graph(study, out, "latency", "latency_p50_us", LATENCY_TOOLS, 1.0, "µs (p50)",
                         "Latency per model: p50 (median over repetitions, 95 % CI)")


def hop_table(study: Study, generator: str | None = None) -> tuple[str | None, pd.DataFrame]:
    """Per model, the client→server direction's expected hops inside the end-to-end path: median over
    repetitions of each hop's mean time, for the study's first variant. generator: default the first latency
    generator that was traced."""
    hops = study.hops
    if hops.empty:
        return None, pd.DataFrame()
    if generator is None:
        traced = list(dict.fromkeys(hops["generator"]))
        tools = dict(zip(study.results["generator"], study.results["tool"]))
        latency_first = [g for g in traced if tools.get(g) in ("sockperf", "ping")] + traced
        generator = latency_first[0]
    # one variant (the study's first, normally the untuned one): hop times of different tunings are not mixed
    first_variant = study.results["variant"].iloc[0]
    h = hops[(hops["generator"] == generator) & hops["expected"].astype(bool) & hops["in_e2e"].astype(bool)
             & (hops["variant"] == first_variant)]
    rows = []
    for model, mh in h.groupby("model", sort=False):
        forward = mh["direction"].iloc[0]  # analysis lists the client's direction first
        for (seq, role), g in mh[mh["direction"] == forward].groupby(["seq", "role"], sort=True):
            rows.append({"model": model, "direction": forward, "seq": int(seq), "role": role,
                         "hop": g["hop"].iloc[0], "mean_us": float(g["mean_us"].fillna(0).median()),
                         "packets": int(g["packets"].sum())})
    return generator, pd.DataFrame(rows)


def hop_stacks(study: Study, out: Path, generator: str | None = None) -> list[Path]:
    """One stacked bar per model: its hops' mean latency, bottom = first hop; one colour per hop role."""
    generator, table = hop_table(study, generator)
    if table.empty:
        return []
    models = [m for m in study.models if m in set(table["model"])]
    roles = sorted(set(table["role"]))
    cmap = plt.get_cmap("tab20")
    colour = {r: cmap(i % 20) for i, r in enumerate(roles)}
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(models) + 4), 5))
    used: set[str] = set()
    for x, model in enumerate(models):
        bottom = 0.0
        for _, r in table[table["model"] == model].sort_values("seq").iterrows():
            label = r["role"] if r["role"] not in used else None
            used.add(r["role"])
            ax.bar(x, r["mean_us"], 0.6, bottom=bottom, color=colour[r["role"]], label=label, edgecolor="white",
                   linewidth=0.5)
            bottom += r["mean_us"]
        ax.text(x, bottom, f"{bottom:.1f}", ha="center", va="bottom", fontsize="small")
    ax.set_xticks(range(len(models)), models, rotation=20, ha="right")
    ax.set_ylabel("µs per packet (mean of each hop, client → server)")
    ax.set_title(f"Where the time goes: per-hop latency per model ({generator})")
    ax.legend(fontsize="x-small", bbox_to_anchor=(1.01, 1), loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, out, "hops-stacked")


def variants(study: Study, out: Path) -> list[Path]:
    """Tuning before/after: each generator's primary metric per variant, one panel per model."""
    s = study.stats
    if s["variant"].nunique() < 2:
        return []
    prim = s[s["primary"].astype(bool)]
    models = [m for m in study.models if m in set(prim["model"])]
    fig, axes = plt.subplots(1, len(models), figsize=(4.5 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models):
        t = prim[prim["model"] == model]
        pivot = t.pivot_table(index="generator", columns="variant", values="median", sort=False)
        first = pivot.iloc[:, 0]
        (pivot.div(first, axis=0) * 100).plot.bar(ax=ax, rot=20)
        ax.set_title(model)
        ax.set_ylabel(f"% of {pivot.columns[0]}")
        ax.grid(axis="y", alpha=0.3)
    return _save(fig, out, "variants")


def render_all(study: Study, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    return throughput(study, out) + latency(study, out) + hop_stacks(study, out) + variants(study, out)
