# SPDX-License-Identifier: Apache-2.0
"""The packet path drawn flame-style: one panel per direction, width = share of the end-to-end latency.

Bottom row: the direction (its end-to-end mean); above it the nodes the packet crosses, in path order; on top the
hops, each as wide as its mean latency is a share of the end-to-end mean. Time no hop explains (the
reconciliation's "unattributed") is a hatched block at the end, so the widths always add up to the end-to-end
time. Socket delivery comes after the end-to-end point and is left out (it is in hops.csv). Reads only the hop
table, so it renders for any recorded run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from cniprof.analysis.cpu_components import COMPONENTS
from cniprof.report.flamegraph import FRAME_H, PAD, WIDTH, _label, _rect, neutral_color, svg_document

PANEL_GAP = 34
UNATTRIBUTED = "unattributed"


def role_color(role: str) -> str:
    """The color of the component whose work the hop role is (cpu_components hop_roles), else a neutral tone."""
    for comp in COMPONENTS.values():
        if comp.datapath and any(k in role for k in comp.hop_roles):
            if comp.group == "netfilter":
                continue  # "ip forward" is drawn in the ip color
            return comp.color
    return neutral_color(role)


def _f(x: Any, fmt: str = "{:.1f}") -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "–"
    return "–" if math.isnan(v) else fmt.format(v)


def _hop_title(r: Mapping[str, Any], share: float) -> str:
    text = (f"{r.get('hop')} · {r.get('role')} · mean {_f(r.get('mean_us'))} µs (p50 {_f(r.get('p50_us'))}, "
            f"p99 {_f(r.get('p99_us'))}) · {share:.1f} % of end-to-end · {int(r.get('packets') or 0):,} packets")
    cpu = r.get("cpu_us_per_pkt")
    if cpu is not None and not (isinstance(cpu, float) and math.isnan(cpu)):
        text += f" · CPU {_f(cpu, '{:.2f}')} µs/packet ({r.get('cpu_component')})"
    return text


def _e2e_of(rows: pd.DataFrame) -> float:
    """The end-to-end mean implied by share_pct (= mean / e2e mean * 100) when no e2e table is given."""
    ok = rows[(rows["share_pct"] > 0) & rows["mean_us"].notna()]
    if len(ok) == 0:
        return math.nan
    return float((ok["mean_us"] / ok["share_pct"] * 100.0).median())


def hop_flame_svg(hops: pd.DataFrame, e2e_mean_us: Mapping[str, float] | None = None,
                  title: str = "Packet path: share of end-to-end latency per hop") -> str:
    """The hop flame graph of a hop table (HOP_COLUMNS, optionally the CPU columns)."""
    body: list[str] = []
    y = 60.0
    path = hops[hops["expected"].astype(bool) & hops["in_e2e"].astype(bool)] if len(hops) else hops
    directions = list(dict.fromkeys(path["direction"])) if len(path) else []
    inner = WIDTH - 2 * PAD
    for direction in directions:
        rows = path[(path["direction"] == direction) & (path["packets"] > 0)].sort_values("seq")
        hop_sum = float(rows["mean_us"].sum())
        e2e = float((e2e_mean_us or {}).get(direction, math.nan))
        if math.isnan(e2e):
            e2e = _e2e_of(rows)
        total = max(hop_sum, e2e if not math.isnan(e2e) else 0.0)
        if total <= 0:
            continue
        scale = inner / total
        body.append(f'<text x="{PAD}" y="{y + 12:.0f}" font-weight="bold">{direction} · end-to-end mean '
                    f'{_f(e2e)} µs · Σ hop means {hop_sum:.1f} µs · {len(rows)} hops</text>')
        top = y + 20
        base_y, node_y, hop_y = top + 2 * FRAME_H, top + FRAME_H, top
        body.append(_rect(PAD, base_y, inner, "#c8c8c8", f"{direction}: end-to-end mean {_f(e2e)} µs",
                          _label(f"{direction} (end-to-end {_f(e2e)} µs)", inner)))
        x = float(PAD)
        groups: list[tuple[str, float, float]] = []  # (node, x, width)
        for _, r in rows.iterrows():
            w = float(r["mean_us"]) * scale
            share = float(r["mean_us"]) / e2e * 100.0 if e2e and not math.isnan(e2e) else math.nan
            long = f"{r['role']} {float(r['mean_us']):.1f} µs"
            body.append(_rect(x, hop_y, w, role_color(str(r["role"])), _hop_title(r, share),
                              _label(long, w) if _label(long, w) == long else _label(str(r["role"]), w)))
            node = str(r.get("node") or "?")
            if groups and groups[-1][0] == node:
                groups[-1] = (node, groups[-1][1], groups[-1][2] + w)
            else:
                groups.append((node, x, w))
            x += w
        for node, gx, gw in groups:
            us = gw / scale
            body.append(_rect(gx, node_y, gw, "#dcdcdc", f"{node}: {us:.1f} µs ({us / total * 100:.1f} %)",
                              _label(node, gw)))
        rest = total - hop_sum
        if rest > 0 and x < PAD + inner - 0.3:
            w = PAD + inner - x
            body.append(_rect(x, hop_y, w, "url(#hatch)", f"{UNATTRIBUTED}: {rest:.1f} µs of the end-to-end time "
                              "no expected hop explains", _label(UNATTRIBUTED, w)))
        y = base_y + FRAME_H + PANEL_GAP
    if not directions:
        body.append(f'<text x="{PAD}" y="{y + 12:.0f}">no hops with packets</text>')
        y += 40
    defs = ('<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
            'patternTransform="rotate(45)"><rect width="6" height="6" fill="#eeeeee"/>'
            '<line x1="0" y1="0" x2="0" y2="6" stroke="#aaaaaa" stroke-width="2"/></pattern></defs>')
    sub = "width = mean latency of each hop as a share of the end-to-end mean · hover for details"
    return svg_document(WIDTH, y + PAD, title, sub, [defs, *body])
