# SPDX-License-Identifier: Apache-2.0
"""report.html: one self-contained page to attach to a bug (no network when opened: scripts, styles, data and
images are inline, and the page's Content-Security-Policy forbids any fetch).

It shows the run's header, the hop table of each direction with end-to-end and reconciliation, the hop flame (each
hop as wide as its share of the end-to-end mean, hover for details), the CPU flame graph (click to zoom, search,
reset; the vendored d3-flame-graph in assets/, see assets/README.md), the netfilter table, drops and the findings
with their evidence and advice; for comparisons, studies and tune runs their tables and graphs.

The page is a pure function of the run directory's files (RunDir) and the images passed in: rendering the same
files again, anywhere, gives the same bytes (the bundle's re-render test relies on it).
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from cniprof import __version__
from cniprof.advise.finding import FAULT, Finding
from cniprof.analysis.cpu_components import frame_component
from cniprof.report import study as study_report
from cniprof.report import tune as tune_report
from cniprof.report.flame_svg import Node, build_tree, component_color, role_color
from cniprof.report.rundir import COMPARISON, STUDY, TRACE, RunDir, TraceDir, compare_rows
from cniprof.report.units import DASH, fmt_bps, fmt_count, fmt_gain, fmt_pct, fmt_us, num, started_text

# Frames drawn in the CPU flame graphs of one page: a 60 s trace of a busy machine has ~30 000 distinct frames;
# the smallest ones beyond this budget are left out (their samples stay in their parent's width) to keep the page
# small. cpu.folded in the run directory keeps every stack.
CPU_FRAME_BUDGET = 40_000
VENDORED = ("d3-7.9.2.min.js", "d3-flame-graph-5.0.0.umd.min.js")
CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; "
       "form-action 'none'; base-uri 'none'")


def asset(name: str) -> str:
    return resources.files("cniprof.report").joinpath("assets", name).read_text(encoding="utf-8")


def _e(x: Any) -> str:
    return escape(str(x), quote=True)


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Iterable[int] = (),
          row_classes: Sequence[str] | None = None, cls: str = "") -> str:
    """An HTML table; cells are escaped unless they are `Raw`; columns whose index is in `numeric` align right."""
    num = set(numeric)
    head = "".join(f'<th{" class=n" if i in num else ""}>{_e(c)}</th>' for i, c in enumerate(columns))
    body = []
    for k, row in enumerate(rows):
        rc = row_classes[k] if row_classes and k < len(row_classes) and row_classes[k] else ""
        cells = "".join(f'<td{" class=n" if i in num else ""}>{c if isinstance(c, Raw) else _e(c)}</td>'
                        for i, c in enumerate(row))
        body.append(f'<tr{f" class={rc}" if rc else ""}>{cells}</tr>')
    return f'<table{f" class={cls}" if cls else ""}><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


class Raw(str):
    """Markup built here (already escaped), put into a table cell as is."""


def _bar(pct: float | None) -> Raw:
    v = max(0.0, min(100.0, pct or 0.0))
    return Raw(f'<span class=bar style="width:{v * 0.9:.1f}px"></span>{_e(fmt_pct(pct))}')


# ---------------------------------------------------------------------------------------------- flame data

def hop_flame(t: TraceDir, direction: str) -> dict[str, Any] | None:
    """The hop flame of one direction as a d3-flame-graph tree: end-to-end at the bottom, the nodes the packet
    crosses above it, the hops on top, each as wide as its mean; time no hop explains is an `unattributed` block."""
    h = t.hops
    rows = h[(h["direction"] == direction) & h["expected"].astype(bool) & h["in_e2e"].astype(bool)
             & (h["packets"] > 0)].sort_values("seq")
    rows = rows[rows["mean_us"].map(lambda v: num(v) is not None)]
    if rows.empty:
        return None
    e2e = (t.summary.get("end_to_end") or {}).get("directions", {}).get(direction, {})
    e2e_mean = num(e2e.get("mean_us"))
    hop_sum = float(rows["mean_us"].clip(lower=0).sum())
    total = max(hop_sum, e2e_mean or 0.0)
    has_cpu = "cpu_us_per_pkt" in rows
    groups: list[dict[str, Any]] = []
    for _, r in rows.iterrows():
        mean = max(0.0, float(r["mean_us"]))
        share = mean / e2e_mean * 100 if e2e_mean else None
        tip = (f"{r['hop']} · {r['role']} · mean {fmt_us(mean)} µs (p50 {fmt_us(r['p50_us'])}, p99 "
               f"{fmt_us(r['p99_us'])}) · {fmt_pct(share)} of end-to-end · {fmt_count(r['packets'])} packets")
        if has_cpu and num(r.get("cpu_us_per_pkt")) is not None:
            tip += f" · CPU {float(r['cpu_us_per_pkt']):.2f} µs/packet ({r.get('cpu_component')})"
        hop = {"name": f"{r['role']} {fmt_us(mean)} µs", "value": mean, "color": role_color(str(r["role"])),
               "tip": tip}
        node = str(r.get("node") or "?")
        if not groups or groups[-1]["node"] != node:
            groups.append({"node": node, "children": []})
        groups[-1]["children"].append(hop)
    children = []
    for g in groups:
        us = sum(c["value"] for c in g["children"])
        children.append({"name": g["node"], "value": us, "color": "#dcdcdc", "children": g["children"],
                         "tip": f"{g['node']}: {fmt_us(us)} µs ({fmt_pct(us / total * 100 if total else None)} of "
                                f"the path)"})
    rest = total - hop_sum
    if rest > 1e-9 * max(total, 1.0):
        children.append({"name": "unattributed", "value": rest, "color": "#eeeeee",
                         "tip": f"unattributed: {fmt_us(rest)} µs of the end-to-end mean no expected hop explains"})
    label = f"{direction} · end-to-end mean {fmt_us(e2e_mean)} µs"
    return {"name": label, "value": total, "color": "#c8c8c8", "children": children,
            "tip": f"{label} · Σ hop means {fmt_us(hop_sum)} µs · {len(rows)} hops"}


def prune_threshold(root: Node, budget: int) -> float:
    """The smallest sample count a frame needs to be drawn so that at most `budget` frames are (children never
    exceed their parent, so the kept frames stay a connected tree)."""
    values: list[float] = []
    todo = [root]
    while todo:
        n = todo.pop()
        values.append(n.value)
        todo.extend(n.children.values())
    if len(values) <= budget:
        return 0.0
    values.sort(reverse=True)
    return values[budget - 1] + 1e-9 if budget > 0 else math.inf


def cpu_flame(folded: Mapping[tuple[str, ...], float], budget: int = CPU_FRAME_BUDGET) -> dict[str, Any]:
    """A CPU profile for the page: a name table, per name its color and datapath component, and the tree as
    nested [name index, samples, [children]] arrays (children sorted by name), frames below the budget's
    threshold left out."""
    root = build_tree(folded)
    threshold = prune_threshold(root, budget)
    names: list[str] = []
    index: dict[str, int] = {}
    kept = 0

    def idx(name: str) -> int:
        if name not in index:
            index[name] = len(names)
            names.append(name)
        return index[name]

    def encode(n: Node) -> list[Any]:
        nonlocal kept
        kept += 1
        out: list[Any] = [idx(n.name), int(n.value)]
        kids = [c for _, c in sorted(n.children.items()) if c.value >= threshold]
        if kids:
            out.append([encode(c) for c in kids])
        return out

    tree = encode(root)
    total_frames = _count_nodes(root)
    return {"names": names, "tree": tree,
            "colors": ["#c8c8c8" if i == 0 else component_color(n) for i, n in enumerate(names)],
            "components": ["" if i == 0 else (frame_component(n) or "") for i, n in enumerate(names)],
            "frames": kept, "frames_total": total_frames, "min_samples": math.ceil(threshold) if threshold else 1}


def _count_nodes(root: Node) -> int:
    n, todo = 0, [root]
    while todo:
        x = todo.pop()
        n += 1
        todo.extend(x.children.values())
    return n


# ---------------------------------------------------------------------------------------------- page parts

class Page:
    """Collects the sections, the navigation and the flame data of one report.html."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.nav: list[tuple[str, str]] = []
        self.hop_flames: list[dict[str, Any]] = []
        self.cpu_flames: list[dict[str, Any]] = []

    def section(self, anchor: str, title: str, body: str) -> None:
        self.nav.append((anchor, title))
        self.parts.append(f'<section id="{_e(anchor)}"><h2>{_e(title)}</h2>{body}</section>')

    def hop_flame_div(self, tree: dict[str, Any]) -> str:
        fid = f"hops-flame-{len(self.hop_flames)}"
        self.hop_flames.append({"id": fid, "tree": tree})
        return (f'<div class=flamebox><div id="{fid}" class="flame hop-flame"></div>'
                f'<div id="{fid}-details" class=details></div></div>')

    def cpu_flame_div(self, folded: Mapping[tuple[str, ...], float], budget: int, freq: float | None) -> str:
        fid = f"cpu-flame-{len(self.cpu_flames)}"
        prof = cpu_flame(folded, budget)
        self.cpu_flames.append({"id": fid, **prof})
        total = prof["tree"][1]
        pruned = prof["frames_total"] - prof["frames"]
        note = (f"{total:,} busy samples" + (f" at {freq:g} Hz" if freq else "") + f" · {prof['frames']:,} frames"
                + (f" ({pruned:,} frames under {prof['min_samples']:,} samples not drawn; cpu.folded has them)"
                   if pruned else "")
                + " · width = samples · colors = datapath components · click a frame to zoom, hover for details")
        return (f'<div class=flamebox><form><input class=search type=search placeholder="search frames (substring)" '
                f'aria-label="search frames"><button type=submit>search</button>'
                f'<button type=button class=reset>reset zoom</button></form>'
                f'<p class=note>{_e(note)}</p><div id="{fid}" class="flame cpu-flame"></div>'
                f'<div id="{fid}-details" class=details></div></div>')


def _header(items: Sequence[tuple[str, Any]]) -> str:
    rows = "".join(f"<dt>{_e(k)}</dt><dd>{v if isinstance(v, Raw) else _e(v)}</dd>" for k, v in items
                   if v not in (None, ""))
    return f"<dl class=header>{rows}</dl>"


def _traffic(summary: Mapping[str, Any]) -> str:
    tr = summary.get("traffic") or {}
    parts = [str(tr.get("tool") or "none")]
    if num(tr.get("throughput_bps")) is not None:
        parts.append(fmt_bps(tr["throughput_bps"]))
    if tr.get("retransmits") is not None:
        parts.append(f"{fmt_count(tr['retransmits'])} retransmits")
    return " · ".join(parts)


def trace_header(t: TraceDir) -> list[tuple[str, Any]]:
    s = t.summary
    sampling = s.get("sampling") or {}
    return [
        ("command", Raw(f"<code>{_e(s['command'])}</code>") if s.get("command") else "not recorded in summary.json"),
        ("started", started_text(s.get("started"))),
        ("cniprof version", s.get("cniprof_version") or "not recorded in summary.json"),
        ("kernel", f"{s.get('kernel')} ({s.get('arch')})"),
        ("CNI and mode", t.spec),
        ("nodes", ", ".join(t.nodes) or DASH),
        ("duration", f"{num(s.get('duration_s')) or 0:.1f} s"),
        ("traffic", _traffic(s)),
        ("sampling", f"1 in {sampling.get('every')} packets ({sampling.get('mode')})" if sampling else None),
        ("probes", ", ".join(s.get("probes") or ()) or None),
    ]


def hop_table(t: TraceDir, direction: str) -> str:
    """One direction's hops in path order with the end-to-end row and the reconciliation under them."""
    h = t.hops[t.hops["direction"] == direction]
    h = h.sort_values(["expected", "seq"], ascending=[False, True], kind="stable")
    has_cpu = "cpu_us_per_pkt" in h and h["cpu_us_per_pkt"].map(num).notna().any()
    cols = ["#", "hop", "role", "packets", "mean µs", "p50 µs", "p90 µs", "p99 µs", "share of end-to-end"]
    cols += ["CPU µs/packet"] if has_cpu else []
    rows, classes = [], []
    for _, r in h.iterrows():
        expected, in_e2e = bool(r["expected"]), bool(r["in_e2e"])
        note = "" if expected and in_e2e else " (after the end)" if expected else " (unexpected pair)"
        row = [r["seq"] if expected else DASH, f"{r['hop']}{note}", r["role"] if expected else DASH,
               fmt_count(r["packets"]), fmt_us(r["mean_us"]), fmt_us(r["p50_us"]), fmt_us(r["p90_us"]),
               fmt_us(r["p99_us"]), _bar(num(r["share_pct"])) if in_e2e else DASH]
        if has_cpu:
            row.append(fmt_us(r.get("cpu_us_per_pkt")))
        rows.append(row)
        classes.append("" if expected and in_e2e else "off")
    e2e = (t.summary.get("end_to_end") or {}).get("directions", {}).get(direction)
    if e2e:
        rows.append(["", "end-to-end", "", fmt_count(e2e.get("packets")), fmt_us(e2e.get("mean_us")),
                     fmt_us(e2e.get("p50_us")), fmt_us(e2e.get("p90_us")), fmt_us(e2e.get("p99_us")), "100 %"]
                    + ([""] if has_cpu else []))
        classes.append("total")
    out = table(cols, rows, numeric=(0, 3, 4, 5, 6, 7, 8, 9), row_classes=classes)
    if e2e:
        out += (f"<p class=note>reconciliation: Σ hop means {fmt_us(e2e.get('hop_mean_sum_us'))} µs vs end-to-end "
                f"mean {fmt_us(e2e.get('mean_us'))} µs · unattributed {fmt_pct(e2e.get('unattributed_pct'), 2)} "
                "(drops, GRO merges and stale entries make them differ)</p>")
    return out


def _path_check(summary: Mapping[str, Any]) -> str:
    pc = summary.get("path_check")
    if not pc:
        return ""
    lines = []
    for d in pc.get("directions") or ():
        issues = []
        if d.get("missing"):
            issues.append(f"{len(d['missing'])} missing hops")
        if d.get("unexpected"):
            issues.append(f"{len(d['unexpected'])} unexpected pairs")
        lines.append(f"{d.get('direction')}: {fmt_count(d.get('completed'))} of {fmt_count(d.get('started'))} "
                     f"tracked packets completed the path" + (f" · {', '.join(issues)}" if issues else ""))
    status = '<span class=ok>ok</span>' if pc.get("ok") else '<span class=fault>not as modelled</span>'
    return f"<p>path check: {status}. {_e('; '.join(lines))}</p>"


def _counters(summary: Mapping[str, Any]) -> str:
    c = summary.get("counters") or {}
    text = " · ".join(f"{k} {fmt_count(v)}" for k, v in c.items())
    return (f"<p class=note>probe counters: {_e(text)} · lost events {fmt_count(summary.get('lost_events'))} · "
            f"unexpected hop pairs {fmt_count(summary.get('unexpected_hop_pairs'))}</p>")


def _cpu_components(summary: Mapping[str, Any], top: int = 12) -> str:
    comps = (summary.get("cpu") or {}).get("components") or {}
    rows = sorted(comps.items(), key=lambda kv: -(num(kv[1].get("share_pct")) or 0))[:top]
    if not rows:
        return ""
    cpu = summary["cpu"]
    body = table(["component", "datapath", "share of busy CPU", "CPU ms", "µs/packet"],
                 [[k, "yes" if v.get("datapath") else "", _bar(num(v.get("share_pct"))), fmt_count(v.get("cpu_ms")),
                   fmt_us(v.get("us_per_pkt"))] for k, v in rows], numeric=(2, 3, 4))
    return (body + f"<p class=note>{fmt_count(cpu.get('samples'))} samples on CPUs {cpu.get('cpus')} · idle "
            f"{fmt_pct(cpu.get('idle_pct'))} · datapath {fmt_pct(cpu.get('datapath_pct'))} of busy CPU</p>")


def nf_table(nf: pd.DataFrame | None) -> str:
    if nf is None or nf.empty:
        return "<p class=note>not measured (trace with --nf)</p>"
    seen = nf[nf["packets"] > 0]
    body = table(["node", "hook", "packets", "mean µs", "p50 µs", "p99 µs", "total ms", "unclosed"],
                 [[r["node"], r["hook"], fmt_count(r["packets"]), fmt_us(r["mean_us"]), fmt_us(r["p50_us"]),
                   fmt_us(r["p99_us"]), fmt_us(r["total_ms"]), fmt_count(r["unclosed"])] for _, r in seen.iterrows()],
                 numeric=(2, 3, 4, 5, 6, 7))
    quiet = len(nf) - len(seen)
    return body + (f"<p class=note>{quiet} hooks saw no packet of the traced pods (nf.csv lists them); unclosed = "
                   "entered the hook and never left it (dropped or stolen there)</p>")


def drops_table(drops: pd.DataFrame) -> str:
    if drops is None or drops.empty:
        return "<p>no tracked packet was dropped</p>"
    return table(["last point", "node", "device", "reason", "packets"],
                 [[r.get("point"), r.get("node"), r.get("device"), r.get("reason"), fmt_count(r.get("count"))]
                  for _, r in drops.iterrows()], numeric=(4,))


def findings_html(found: Sequence[Finding], top: int | None = None) -> str:
    if not found:
        return "<p>no finding</p>"
    out = []
    for f in found[:top] if top else found:
        group = " · ".join(str(f.group[k]) for k in ("model", "path", "variant") if f.group.get(k))
        ev = table(["where", "metric", "value", "threshold", "from"],
                   [[e.where, e.metric, f"{e.value:.3g}" if isinstance(e.value, float) else e.value,
                     DASH if e.threshold is None else e.threshold, e.source] for e in f.evidence])
        advice = "".join(
            f"<li><b>{_e(a.get('title'))}</b>" + (f" · <code>cniprof tune --try {_e(a['tune'])}</code>"
                                                  if a.get("tune") else "")
            + (f"<pre>{_e(a['how'])}</pre>" if a.get("how") else "")
            + (f"<span class=note>risk: {_e(a['risk'])}</span>" if a.get("risk") else "") + "</li>"
            for a in f.advice)
        sev = "fault" if f.severity == FAULT else "observation"
        out.append(f'<div class="finding{" fault-box" if sev == "fault" else ""}"><h3>#{f.rank} '
                   f'<span class={sev}>{_e(f.severity)}</span> · {f.share:.0%} · {_e(f.title)}'
                   + (f" <span class=note>({_e(group)})</span>" if group else "") + f"</h3>{ev}"
                   + (f"<ul>{advice}</ul>" if advice else "") + "</div>")
    return "".join(out)


def trace_sections(page: Page, t: TraceDir, *, prefix: str = "", budget: int = CPU_FRAME_BUDGET,
                   findings_top: int | None = None) -> None:
    """The hop tables, flames, CPU, netfilter, drops and findings of one trace export."""
    label = f"{prefix} · " if prefix else ""
    anchor = f"{prefix}-" if prefix else ""
    body = "".join(f"<h3>{_e(d)}</h3>{hop_table(t, d)}" for d in t.directions)
    page.section(f"{anchor}hops", f"{label}hops", body + _path_check(t.summary) + _counters(t.summary))
    flames = [(d, hop_flame(t, d)) for d in t.directions]
    page.section(f"{anchor}hop-flame", f"{label}hop flame",
                 "<p class=note>each hop as wide as its mean latency's share of the end-to-end mean · hover for "
                 "details, click to zoom</p>"
                 + "".join(f"<h3>{_e(d)}</h3>" + page.hop_flame_div(tree) for d, tree in flames if tree)
                 or "<p>no hop with packets</p>")
    if t.folded is not None:
        page.section(f"{anchor}cpu", f"{label}CPU flame graph",
                     page.cpu_flame_div(t.folded, budget, t.cpu_freq_hz) + _cpu_components(t.summary))
    page.section(f"{anchor}netfilter", f"{label}netfilter", nf_table(t.nf))
    page.section(f"{anchor}drops", f"{label}drops", drops_table(t.drops))
    page.section(f"{anchor}findings", f"{label}findings", findings_html(t.findings, findings_top))


def comparison_table(cmp: pd.DataFrame) -> str:
    models, rows = compare_rows(cmp)
    out = table(["", "metric", *models], [[section, label, *cells] for section, label, cells in rows],
                numeric=range(2, 2 + len(models)))
    skipped = cmp[cmp["status"] != "traced"]
    out += "".join(f"<p class=note>{_e(r['status'])} {_e(r['model'])}: {_e(r['note'])}</p>"
                   for _, r in skipped.iterrows())
    return out + "<p class=note>(n %) = percentage of host:network's value; hop rows are mean µs</p>"


def study_header(run: RunDir) -> list[tuple[str, Any]]:
    meta = run.study.metadata if run.study else {}
    env = meta.get("environment") or {}
    sc = meta.get("scenario") or {}
    return [("scenario", f"{sc.get('name')}" + (f": {sc['description']}" if sc.get("description") else "")),
            ("command", Raw(f"<code>{_e(meta['command'])}</code>") if meta.get("command") else None),
            ("cniprof version", env.get("cniprof_version")),
            ("kernel", f"{env.get('kernel')} ({env.get('arch')})"),
            ("CPU", f"{env.get('cpu_model')} × {env.get('cpus')}"),
            ("models", ", ".join(run.study.models) if run.study else None),
            ("repetitions × duration", f"{sc.get('repetitions')} × {sc.get('duration_s')} s"),
            ("status", (f"{meta.get('status')} · {len(meta.get('runs', []))} runs · "
                       f"{len(meta.get('failed', []))} failed · {len(meta.get('skipped', []))} skipped"))]


def study_sections(page: Page, run: RunDir) -> None:
    data = run.study
    assert data is not None
    cmp = study_report.comparison(data)
    shown = study_report.label_columns(cmp)
    rows = [[*labels, *(text for text, _ in cells)] for labels, cells in study_report.table_rows(cmp, data.models,
                                                                                                  shown)]
    page.section("comparison", "comparison", table([*shown, *data.models], rows,
                                                   numeric=range(len(shown), len(shown) + len(data.models)))
                 + f"<p class=note>median over repetitions (% of host); ! = 95 % CI half-width over "
                   f"{data.metadata.get('max_spread_pct', 10)} % of the median</p>")
    cpu = study_report.cpu_summary(data)
    if not cpu.empty:
        page.section("cpu", "CPU", table(
            ["model", "path", "variant", "generator", "component", "% of busy CPU", "µs/packet", "NET_RX %"],
            [[r["model"], r["path"], r["variant"], r["generator"], r["component"], fmt_pct(r.get("share_pct")),
              fmt_us(r.get("us_per_pkt")), fmt_pct(r.get("net_rx_pct"))] for _, r in cpu.iterrows()],
            numeric=(5, 6, 7)))
    page.section("findings", "findings", findings_html(run.study_findings))


def tune_section(page: Page, run: RunDir) -> None:
    if run.tune is None:
        return
    rows = tune_report.effects(run.tune)
    body = table(["tuning", "generator", "metric", "baseline", "tuned", "gain", "95 % CI", "pairs", "verdict"],
                 [[r["tuning"], r["generator"], r["metric"], study_report.fmt(r["metric"], r["baseline_median"]),
                   study_report.fmt(r["metric"], r["tuned_median"]), fmt_gain(r["gain_median"]),
                   DASH if r["ci_low"] is None else f"{fmt_gain(r['ci_low'])} .. {fmt_gain(r['ci_high'])}",
                   r["pairs"], r["verdict"]] for r in rows], numeric=(3, 4, 5, 7))
    meta = run.tune_meta
    note = (f"<p class=note>lab {_e(meta.get('cni'))} · path {_e(meta.get('path'))} · injections "
            f"{_e(', '.join(meta.get('injections') or ()) or 'none')} · gain = tuned / baseline (baseline / tuned "
            "for latency)</p>") if meta else ""
    page.section("tune", "tune: paired before/after", body + note)


def images_section(page: Page, images: Sequence[Path]) -> None:
    tags = []
    for p in images:
        mime = "image/svg+xml" if p.suffix == ".svg" else "image/png"
        data = base64.b64encode(p.read_bytes()).decode("ascii")
        tags.append(f'<figure><img class=graph alt="{_e(p.stem)}" src="data:{mime};base64,{data}">'
                    f"<figcaption class=note>{_e(p.name)}</figcaption></figure>")
    if tags:
        page.section("graphs", "graphs", "".join(tags))


# ---------------------------------------------------------------------------------------------- the page

def render(run: RunDir, images: Sequence[Path] = (), bundle_name: str | None = None) -> str:
    """The whole page. `images`: graph files (PNG/SVG) to embed; `bundle_name`: the tarball the footer names."""
    page = Page()
    title = run.title
    if run.kind == TRACE and run.trace is not None:
        header = _header(trace_header(run.trace))
        trace_sections(page, run.trace)
    elif run.kind == COMPARISON and run.compare is not None:
        first = run.models[0].summary if run.models else {}
        header = _header([("command", Raw(f"<code>{_e(first['command'])}</code>") if first.get("command") else None),
                          ("cniprof version", first.get("cniprof_version")),
                          ("kernel", f"{first.get('kernel')} ({first.get('arch')})" if first else None),
                          ("models", ", ".join(t.spec for t in run.models)),
                          ("duration", f"{num(first.get('duration_s')) or 0:.1f} s per model" if first else None),
                          ("traffic", (first.get("traffic") or {}).get("tool") or "none")])
        page.section("comparison", "comparison", comparison_table(run.compare))
        budget = CPU_FRAME_BUDGET // max(1, sum(t.folded is not None for t in run.models))
        for t in run.models:
            trace_sections(page, t, prefix=t.name, budget=budget, findings_top=3)
    elif run.kind == STUDY:
        header = _header(study_header(run))
        study_sections(page, run)
    else:
        meta = run.tune_meta
        header = _header([("lab", meta.get("cni")), ("path", meta.get("path")), ("pairs", meta.get("pairs")),
                          ("duration", f"{meta.get('duration_s')} s per run" if meta.get("duration_s") else None)])
    tune_section(page, run)
    images_section(page, images)
    data = json.dumps({"hop_flames": page.hop_flames, "cpu_flames": page.cpu_flames}, separators=(",", ":"),
                      ensure_ascii=False, allow_nan=False).replace("<", "\\u003c")
    nav = "".join(f'<a href="#{_e(a)}">{_e(t)}</a>' for a, t in page.nav)
    scripts = "".join(f"<script>{asset(name)}</script>" for name in (*VENDORED, "report.js"))
    footer = (f"rendered by cniprof {_e(__version__)} (<code>cniprof report DIR</code> renders it again from the run's files)"
              + (f" · the run's files: {_e(bundle_name)}" if bundle_name else "")
              + " · flame graphs: d3-flame-graph 5.0.0 (Apache-2.0) and d3 7.9.2 (ISC)")
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name=viewport content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{asset('report.css')}</style></head>\n<body><main>"
            f"<h1>{_e(title)}</h1>{header}<nav>{nav}</nav>\n" + "\n".join(page.parts)
            + f"\n<footer>{footer}</footer></main>\n"
            f'<script type="application/json" id="cniprof-data">{data}</script>\n{scripts}\n</body></html>\n')
