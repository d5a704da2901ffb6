# SPDX-License-Identifier: Apache-2.0
"""Self-contained SVG flame graphs drawn from folded stacks: no external tool, no JavaScript, no fonts to fetch.

Width is samples; the root ("all") is at the bottom and callees stack upwards, as in Brendan Gregg's flame graphs.
Hovering a frame shows its <title> (name, samples, share). Frames are colored by the datapath component their
function belongs to (cpu_components, legend on top), other frames in muted sand tones, so the network layers
stand out at a glance.

The differential graph merges two profiles: each frame's width is the mean of its normalised share in A and B
(so frames that vanished in B stay visible), its color the change in share: red = a larger share of B's samples,
blue = smaller, white = unchanged, saturated at the largest change in the graph.

The packet path drawn flame-style: one panel per direction, width = share of the end-to-end latency.

Bottom row: the direction (its end-to-end mean); above it the nodes the packet crosses, in path order; on top the
hops, each as wide as its mean latency is a share of the end-to-end mean. Time no hop explains (the
reconciliation's "unattributed") is a hatched block at the end, so the widths always add up to the end-to-end
time. Socket delivery comes after the end-to-end point and is left out (it is in hops.csv). Reads only the hop
table, so it renders for any recorded run.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape

import lazy_loader

from cniprof.analysis.cpu_components import COMPONENTS, color_for, frame_component

if TYPE_CHECKING:
    import pandas as pd
else:  # imported on first use: a command that does not need it does not wait for it
    pd = lazy_loader.load("pandas")

WIDTH = 1200
FRAME_H = 17
FONT = 11
CHAR_W = 6.6  # average glyph width of an 11 px sans-serif font, for label truncation
PAD = 10
MIN_W = 0.3  # narrower frames are not drawn (they would be invisible anyway)

Folded = Mapping[tuple[str, ...], float]


@dataclass
class Node:
    name: str
    value: float = 0.0
    other: float = 0.0  # the second profile's value, for differential graphs
    children: dict[str, Node] = field(default_factory=dict)

    def child(self, name: str) -> Node:
        node = self.children.get(name)
        if node is None:
            node = self.children[name] = Node(name)
        return node

    def depth(self) -> int:
        return 1 + max((c.depth() for c in self.children.values()), default=0)


def build_tree(folded: Folded, other: Folded | None = None) -> Node:
    """A call tree: root "all", children in folded order (comm first). `other` fills Node.other."""
    root = Node("all")
    for frames, count in folded.items():
        root.value += count
        node = root
        for f in frames:
            node = node.child(f)
            node.value += count
    for frames, count in (other or {}).items():
        root.other += count
        node = root
        for f in frames:
            node = node.child(f)
            node.other += count
    return root


def neutral_color(name: str) -> str:
    """A muted sand palette for frames outside the datapath components, stable per name (a hash, not random, so
    reruns match); muted so that the component colors stand out."""
    h = hashlib.md5(name.encode()).digest()
    r, g, b = 212 + h[0] % 30, 196 + h[1] % 30, 160 + h[2] % 30
    return f"#{r:02x}{g:02x}{b:02x}"


def component_color(name: str) -> str:
    return color_for(frame_component(name)) or neutral_color(name)


def diff_color(delta: float, scale: float) -> str:
    """White for no change, towards red (B larger) or blue (B smaller)."""
    x = 0.0 if scale <= 0 else max(-1.0, min(1.0, delta / scale))
    fade = int(235 - 185 * abs(x))
    if x > 0:
        return f"#ff{fade:02x}{fade:02x}"
    if x < 0:
        return f"#{fade:02x}{fade:02x}ff"
    return "#ebebeb"


def _label(name: str, width: float) -> str:
    n = int((width - 4) / CHAR_W)
    if n < 3:
        return ""
    return name if len(name) <= n else name[: n - 2] + ".."


def _rect(x: float, y: float, w: float, color: str, title: str, label: str) -> str:
    text = (f'<text x="{x + 3:.1f}" y="{y + FRAME_H - 5:.1f}">{escape(label)}</text>' if label else "")
    return (f'<g><title>{escape(title)}</title><rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" '
            f'height="{FRAME_H - 1}" fill="{color}" rx="2"/>{text}</g>')


def svg_document(width: float, height: float, title: str, subtitle: str, body: list[str]) -> str:
    head = (f'<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n'
            f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{width:.0f}" height="{height:.0f}" '
            f'viewBox="0 0 {width:.0f} {height:.0f}">\n'
            f'<style>text {{ font-family: Verdana, sans-serif; font-size: {FONT}px; fill: #000; }} '
            f'.t {{ font-size: 16px; font-weight: bold; }} .s {{ fill: #555; }} '
            f'rect:hover {{ stroke: #000; stroke-width: 0.8; }}</style>\n'
            f'<rect x="0" y="0" width="{width:.0f}" height="{height:.0f}" fill="#fcfcf6"/>\n'
            f'<text class="t" x="{width / 2:.0f}" y="24" text-anchor="middle">{escape(title)}</text>\n'
            f'<text class="s" x="{width / 2:.0f}" y="42" text-anchor="middle">{escape(subtitle)}</text>\n')
    return head + "\n".join(body) + "\n</svg>\n"


def _legend(y0: float, entries: list[tuple[str, str]]) -> tuple[list[str], float]:
    """Color swatches wrapped to the width; returns the elements and the height they take."""
    out: list[str] = []
    x, y = float(PAD), y0
    for name, color in entries:
        w = len(name) * CHAR_W + 22
        if x + w > WIDTH - PAD:
            x, y = PAD, y + 16
        out.append(f'<rect x="{x:.0f}" y="{y:.0f}" width="12" height="12" fill="{color}"/>'
                   f'<text x="{x + 16:.0f}" y="{y + 10:.0f}">{escape(name)}</text>')
        x += w
    return out, (y - y0 + 20 if entries else 0)


def _layout(root: Node, width_of: Callable[[Node], float], color_of: Callable[[Node], str],
            title_of: Callable[[Node], str], top: float) -> tuple[list[str], float]:
    """Frames as SVG groups, root at the bottom; returns them and the total height used below `top`."""
    depth = root.depth()
    height = depth * FRAME_H
    scale = (WIDTH - 2 * PAD) / width_of(root) if width_of(root) > 0 else 0.0
    out: list[str] = []

    def draw(node: Node, x: float, level: int) -> None:
        w = width_of(node) * scale
        if w < MIN_W:
            return
        y = top + height - (level + 1) * FRAME_H
        out.append(_rect(x, y, w, color_of(node), title_of(node), _label(node.name, w)))
        cx = x
        for child in sorted(node.children.values(), key=lambda c: c.name):
            draw(child, cx, level + 1)
            cx += width_of(child) * scale

    draw(root, PAD, 0)
    return out, height


def flame_svg(folded: Folded, title: str = "CPU flame graph", subtitle: str = "") -> str:
    """One profile as an SVG flame graph (width = samples)."""
    root = build_tree(folded)
    total = root.value or 1.0

    def title_of(n: Node) -> str:
        comp = frame_component(n.name)
        extra = f" · {comp}" if comp else ""
        return f"{n.name} ({n.value:,.0f} samples, {n.value / total * 100:.2f} %){extra}"

    used = sorted({c for f in _all_names(root) if (c := frame_component(f))}, key=list(COMPONENTS).index)
    legend, legend_h = _legend(52, [(c, COMPONENTS[c].color) for c in used])
    top = 52 + legend_h
    body, h = _layout(root, lambda n: n.value, lambda n: component_color(n.name) if n is not root else "#c8c8c8",
                      title_of, top)
    sub = subtitle or f"{root.value:,.0f} samples · width = samples · hover for details"
    return svg_document(WIDTH, top + h + PAD, title, sub, legend + body)


def _all_names(root: Node) -> set[str]:
    out, todo = set(), [root]
    while todo:
        n = todo.pop()
        out.add(n.name)
        todo.extend(n.children.values())
    return out


def diff_svg(a: Folded, b: Folded, title: str = "Differential CPU flame graph", a_name: str = "A",
             b_name: str = "B") -> str:
    """B against A, normalised by each profile's total samples (module docstring)."""
    root = build_tree(b, a)
    tb, ta = root.value or 1.0, root.other or 1.0

    def share_b(n: Node) -> float:
        return n.value / tb

    def share_a(n: Node) -> float:
        return n.other / ta

    def width_of(n: Node) -> float:
        return (share_a(n) + share_b(n)) / 2

    deltas = [share_b(n) - share_a(n) for n in _walk(root) if n is not root]
    scale = max((abs(d) for d in deltas), default=0.0)

    def title_of(n: Node) -> str:
        d = (share_b(n) - share_a(n)) * 100
        return (f"{n.name}: {a_name} {n.other:,.0f} samples ({share_a(n) * 100:.2f} %) → {b_name} "
                f"{n.value:,.0f} samples ({share_b(n) * 100:.2f} %), {d:+.2f} pp")

    legend, legend_h = _legend(52, [(f"more in {b_name}", diff_color(scale, scale)),
                                    ("unchanged", diff_color(0, scale)),
                                    (f"less in {b_name}", diff_color(-scale, scale))])
    top = 52 + legend_h
    body, h = _layout(root, width_of, lambda n: diff_color(share_b(n) - share_a(n), scale), title_of, top)
    sub = (f"{a_name}: {root.other:,.0f} samples · {b_name}: {root.value:,.0f} samples · width = mean share · "
           f"color = change in share (saturates at {scale * 100:.1f} pp)")
    return svg_document(WIDTH, top + h + PAD, title, sub, legend + body)


def _walk(root: Node) -> list[Node]:
    out, todo = [], [root]
    while todo:
        n = todo.pop()
        out.append(n)
        todo.extend(n.children.values())
    return out


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
