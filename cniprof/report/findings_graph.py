# SPDX-License-Identifier: Apache-2.0
"""The ranked findings as a bar graph (findings.png/.svg): each finding's share of end-to-end latency or busy CPU,
faults in red, observations in grey, in rank order, so a reader sees at a glance whether anything is wrong and
what dominates. Written by `cniprof advise` and `cniprof report`."""

from __future__ import annotations

import textwrap
from pathlib import Path

from cniprof.advise.finding import FAULT, Finding
from cniprof.report.graphs import _save, plt

TOP = 12  # findings drawn; the rest are in findings.csv
LABEL_WIDTH = 60


def _label(f: Finding) -> str:
    group = " · ".join(str(f.group[k]) for k in ("model", "path", "variant") if f.group.get(k))
    text = f"#{f.rank} {f.title}" + (f" [{group}]" if group else "")
    return "\n".join(textwrap.wrap(text, LABEL_WIDTH)[:2])


def graph(findings: list[Finding], out: Path, title: str) -> list[Path]:
    """findings.png and findings.svg in out; nothing without findings."""
    shown = findings[:TOP]
    if not shown:
        return []
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(shown) + 1.2))
    ys = range(len(shown))[::-1]
    colors = ["tab:red" if f.severity == FAULT else "0.6" for f in shown]
    ax.barh(list(ys), [100 * f.share for f in shown], color=colors)
    ax.set_yticks(list(ys), [_label(f) for f in shown], fontsize="small")
    for y, f in zip(ys, shown):
        ax.text(100 * f.share + 0.5, y, f"{f.share:.0%} {f.severity}", va="center", fontsize="x-small")
    ax.set_xlim(0, 115)
    ax.set_xlabel("share of end-to-end latency or busy CPU (%)")
    faults = sum(f.severity == FAULT for f in findings)
    ax.set_title(f"{title}: {faults} fault{'s' if faults != 1 else ''}, {len(findings)} findings", fontsize="medium")
    ax.grid(axis="x", alpha=0.3)
    out.mkdir(parents=True, exist_ok=True)
    return _save(fig, out, "findings")
