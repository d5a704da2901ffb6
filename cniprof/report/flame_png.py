# SPDX-License-Identifier: Apache-2.0
"""hops-flame.png and cpu-flame.png: the two flame graphs as images, for issue trackers that show PNGs inline and
not SVG or HTML. Drawn with matplotlib from the same trees as report.html (html.hop_flame, flame_svg.build_tree)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; must precede pyplot

import matplotlib.pyplot as plt
from matplotlib.collections import PatchCollection
from matplotlib.patches import Rectangle

from cniprof.report.flame_svg import Node, build_tree, component_color
from cniprof.report.html import hop_flame
from cniprof.report.rundir import TraceDir

HOPS_FLAME_PNG = "hops-flame.png"
CPU_FLAME_PNG = "cpu-flame.png"
WIDTH_IN, DPI = 14.0, 100
ROW_IN = 0.22  # height of one frame row
CHAR_FRACTION = 0.0052  # width of one 7.5 pt label character as a fraction of the axes width
MIN_FRACTION = 0.0005  # frames narrower than this share of the root are not drawn (under a pixel)
# PNG metadata without the matplotlib version, so that the same run gives the same bytes on any install
METADATA = {"Software": None}


def frames(tree: Mapping[str, Any], min_fraction: float = MIN_FRACTION) -> Iterator[tuple[float, float, int, Mapping]]:
    """(x, width, depth, node) of every frame of a {name, value, color, children} tree, x and width as fractions
    of the root; children in their given order, left to right; frames narrower than min_fraction left out."""
    total = float(tree.get("value") or 0.0)
    if total <= 0:
        return
    todo: list[tuple[Mapping[str, Any], float, int]] = [(tree, 0.0, 0)]
    while todo:
        node, x, depth = todo.pop()
        w = float(node.get("value") or 0.0) / total
        if w < min_fraction:
            continue
        yield x, w, depth, node
        cx = x
        for child in node.get("children") or ():
            todo.append((child, cx, depth + 1))
            cx += float(child.get("value") or 0.0) / total


def _draw(ax: plt.Axes, tree: Mapping[str, Any], title: str) -> None:
    placed = list(frames(tree))
    depth = max((d for _, _, d, _ in placed), default=0) + 1
    rects = [Rectangle((x, d), w, 0.94) for x, w, d, _ in placed]
    ax.add_collection(PatchCollection(rects, facecolors=[n.get("color") or "#dddddd" for *_, n in placed],
                                      edgecolors="white", linewidths=0.3))
    for x, w, d, n in placed:
        chars = int(w / CHAR_FRACTION) - 1
        if chars >= 3:
            name = str(n.get("name"))
            ax.text(x + 0.002, d + 0.47, name if len(name) <= chars else name[: chars - 2] + "..",
                    va="center", ha="left", fontsize=7.5, clip_on=True)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, depth)
    ax.set_axis_off()
    ax.set_title(title, fontsize=9.5, loc="left")


def _save(fig: plt.Figure, path: Path) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, dpi=DPI, format="png", metadata=METADATA)
    plt.close(fig)
    tmp.replace(path)
    return path


def hops_png(panels: Sequence[tuple[str, Mapping[str, Any]]], path: Path) -> Path:
    """One panel per (title, hop flame tree): end-to-end at the bottom, nodes, hops on top."""
    fig, axes = plt.subplots(len(panels), 1, figsize=(WIDTH_IN, 0.5 + len(panels) * (3 * ROW_IN + 0.45)),
                             squeeze=False)
    for ax, (title, tree) in zip(axes[:, 0], panels):
        _draw(ax, tree, title)
    fig.suptitle("Packet path: each hop as wide as its share of the end-to-end mean", fontsize=11, x=0.01,
                 ha="left")
    fig.tight_layout()
    return _save(fig, path)


def cpu_tree(folded: Mapping[tuple[str, ...], float]) -> dict[str, Any]:
    """The folded stacks as a {name, value, color, children} tree, children by name as in report.html."""
    def convert(n: Node, root: bool = False) -> dict[str, Any]:
        return {"name": n.name, "value": n.value, "color": "#c8c8c8" if root else component_color(n.name),
                "children": [convert(c) for _, c in sorted(n.children.items())]}

    return convert(build_tree(folded), root=True)


def cpu_png(folded: Mapping[tuple[str, ...], float], path: Path, title: str) -> Path:
    tree = cpu_tree(folded)
    depth = max((d for _, _, d, _ in frames(tree)), default=0) + 1
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 0.7 + depth * ROW_IN))
    _draw(ax, tree, title)
    fig.tight_layout()
    return _save(fig, path)


def write(t: TraceDir, out: Path, suffix: str = "") -> list[Path]:
    """hops-flame<suffix>.png (every direction with packets) and, with a CPU profile, cpu-flame<suffix>.png."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    panels = [(f"{t.spec} · {d}", tree) for d in t.directions if (tree := hop_flame(t, d)) is not None]
    stem = HOPS_FLAME_PNG.replace(".png", f"{suffix}.png")
    if panels:
        written.append(hops_png(panels, out / stem))
    if t.folded:
        samples = int(sum(t.folded.values()))
        written.append(cpu_png(t.folded, out / CPU_FLAME_PNG.replace(".png", f"{suffix}.png"),
                               f"{t.spec} · CPU flame graph · {samples:,} busy samples · width = samples · "
                               "colors = datapath components (report.html: zoom, search)"))
    return written
