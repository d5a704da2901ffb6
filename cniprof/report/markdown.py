# SPDX-License-Identifier: Apache-2.0
"""report.md: GitHub-flavoured Markdown to paste into a bug, under 60 lines: the header, the forward hop table with
end-to-end, the top findings and a line naming the bundle (report.html has everything else)."""

from __future__ import annotations

from collections.abc import Sequence

from cniprof.advise.finding import Finding
from cniprof.report import study as study_report
from cniprof.report.rundir import COMPARISON, STUDY, TRACE, TUNE, RunDir, TraceDir, compare_rows
from cniprof.report.tune import effects
from cniprof.report.units import DASH, fmt_bps, fmt_count, fmt_gain, fmt_pct, fmt_us, num, started_text

MAX_LINES = 59  # "under 60 lines"
TOP_FINDINGS = 3


def _cell(x: object) -> str:
    """A table cell: pipes escaped, no line breaks."""
    return str(x).replace("|", "\\|").replace("\n", " ")


def md_table(columns: Sequence[str], rows: Sequence[Sequence[object]], numeric: Sequence[int] = (),
             max_rows: int | None = None, more: str = "rows") -> list[str]:
    align = ["---:" if i in numeric else "---" for i in range(len(columns))]
    lines = ["| " + " | ".join(_cell(c) for c in columns) + " |", "|" + "|".join(align) + "|"]
    shown = rows if max_rows is None or len(rows) <= max_rows else rows[: max(0, max_rows - 1)]
    lines += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in shown]
    if len(shown) < len(rows):
        lines.append("| " + " | ".join([f"… {len(rows) - len(shown)} more {more} in report.html"]
                                       + [""] * (len(columns) - 1)) + " |")
    return lines


def _version(summary: dict) -> str:
    v = summary.get("cniprof_version")
    return f" · cniprof {v}" if v else ""


def _trace_header(t: TraceDir) -> list[str]:
    s = t.summary
    tr = s.get("traffic") or {}
    traffic = str(tr.get("tool") or "no traffic")
    if num(tr.get("throughput_bps")) is not None:
        traffic += f" {fmt_bps(tr['throughput_bps'])}"
    if tr.get("retransmits") is not None:
        traffic += f", {fmt_count(tr['retransmits'])} retransmits"
    sampling = (s.get("sampling") or {}).get("every")
    started = started_text(s.get("started"))
    out = [f"**{t.spec}** · {f'{started} · ' if started else ''}kernel {s.get('kernel')} ({s.get('arch')}){_version(s)} · "
           f"nodes {', '.join(t.nodes) or DASH} · {num(s.get('duration_s')) or 0:.1f} s · {traffic}"
           + (f" · 1 in {sampling} packets tracked" if sampling else "")]
    if s.get("command"):
        out += ["", f"`{s['command']}`"]
    return out


def hop_rows(t: TraceDir, direction: str) -> list[list[object]]:
    h = t.hops
    rows = h[(h["direction"] == direction) & h["expected"].astype(bool) & h["in_e2e"].astype(bool)]
    return [[r["seq"], r["hop"], r["role"], fmt_count(r["packets"]), fmt_us(r["mean_us"]), fmt_us(r["p50_us"]),
             fmt_us(r["p99_us"]), fmt_pct(r["share_pct"])] for _, r in rows.sort_values("seq").iterrows()]


def trace_lines(t: TraceDir, budget: int) -> list[str]:
    """The forward direction's hop table, end-to-end and reconciliation, the other directions in one line."""
    if not t.directions:
        return ["no hop with packets"]
    fwd, *others = t.directions
    e2e = (t.summary.get("end_to_end") or {}).get("directions", {})
    rows = hop_rows(t, fwd)
    e = e2e.get(fwd) or {}
    total = ["", "**end-to-end**", "", fmt_count(e.get("packets")), f"**{fmt_us(e.get('mean_us'))}**",
             fmt_us(e.get("p50_us")), fmt_us(e.get("p99_us")), "100 %"]
    out = [f"### {fwd} (forward)", ""]
    out += md_table(["#", "hop", "role", "packets", "mean µs", "p50 µs", "p99 µs", "share"], [*rows, total],
                    numeric=(0, 3, 4, 5, 6, 7), max_rows=max(3, budget - 8), more="hops")
    out += ["", f"Σ hop means {fmt_us(e.get('hop_mean_sum_us'))} µs vs end-to-end mean {fmt_us(e.get('mean_us'))} µs "
                f"(unattributed {fmt_pct(e.get('unattributed_pct'), 2)})"
            + "".join(f" · {d}: end-to-end mean {fmt_us(e2e[d]['mean_us'])} µs" for d in others
                      if num((e2e.get(d) or {}).get("mean_us")) is not None)]
    drops = int(t.drops["count"].sum()) if len(t.drops) else 0
    pc = t.summary.get("path_check") or {}
    out.append(f"drops: {drops:,}" + (f" ({', '.join(f'{r}: {int(n)}' for r, n in t.drops.groupby('reason')['count'].sum().items())})"
                                      if drops else "")
               + (f" · path check {'ok' if pc.get('ok') else 'NOT as modelled'}" if pc else ""))
    return out


def finding_lines(found: Sequence[Finding], top: int = TOP_FINDINGS, labels: Sequence[str] = ()) -> list[str]:
    """One line per finding; `labels`: per finding, the model it is about (a comparison's)."""
    if not found:
        return ["No finding."]
    out = []
    for i, f in enumerate(found[:top]):
        group = " · ".join(str(f.group[k]) for k in ("model", "path", "variant") if f.group.get(k))
        tunes = [a["tune"] for a in f.advice if a.get("tune")]
        advice = f.advice[0]["title"] if f.advice else ""
        lead = f"- **{labels[i]}**: " if i < len(labels) else f"{f.rank}. "
        out.append(f"{lead}**{f.severity}** ({f.share:.0%}) {f.title}" + (f" [{group}]" if group else "")
                   + (f": {f.evidence[0].text()}" if f.evidence else "")
                   + (f". Try: {advice}" if advice else "")
                   + (f" (`cniprof tune --try {tunes[0]}`)" if tunes else ""))
    return out


def _comparison_lines(run: RunDir, budget: int) -> list[str]:
    assert run.compare is not None
    models, rows = compare_rows(run.compare)
    return md_table(["metric (hops: mean µs)", *models], [[label, *cells] for _, label, cells in rows],
                    numeric=range(1, 1 + len(models)), max_rows=budget)


def _study_lines(run: RunDir, budget: int) -> list[str]:
    data = run.study
    assert data is not None
    cmp = study_report.comparison(data)
    shown = study_report.label_columns(cmp)
    rows = [[*labels, *(text for text, _ in cells)]
            for labels, cells in study_report.table_rows(cmp, data.models, shown)]
    return md_table([*shown, *data.models], rows, numeric=range(len(shown), len(shown) + len(data.models)),
                    max_rows=budget)


def render(run: RunDir, bundle_name: str, bundled: bool = True) -> str:
    """report.md of any run directory, cut to stay under 60 lines (tables say how many rows were left out).
    bundle_name: the run's bundle, attached beside it (`bundled`) or made by `cniprof report DIR --bundle`."""
    head = [f"## {run.title}", ""]
    files = (f"the run's files: `{bundle_name}` (`cniprof report DIR` renders this report from them)" if bundled
             else f"the run's files: `cniprof report DIR --bundle` writes `{bundle_name}`")
    tail = ["", f"Full report (flame graphs, every hop, netfilter, drops, advice): report.html · {files}"]
    findings: list[Finding] = []
    labels: list[str] = []
    if run.kind == TRACE and run.trace is not None:
        head += _trace_header(run.trace) + [""]
        findings = run.trace.findings
    elif run.kind == COMPARISON:
        if run.models:
            s = run.models[0].summary
            head += [(f"kernel {s.get('kernel')} ({s.get('arch')}){_version(s)} · "
                     f"{(s.get('traffic') or {}).get('tool') or 'no traffic'} · {num(s.get('duration_s')) or 0:.1f} s "
                     "per model · (n %) = percentage of host:network's value"), ""]
        findings = [f for t in run.models for f in t.findings[:1]]
        labels = [t.spec for t in run.models if t.findings]
    elif run.kind == STUDY and run.study is not None:
        meta = run.study.metadata
        env = meta.get("environment") or {}
        head += [(f"kernel {env.get('kernel')} ({env.get('arch')}) · {env.get('cpu_model')} × {env.get('cpus')} · "
                 f"cniprof {env.get('cniprof_version')} · {len(meta.get('runs', []))} runs, "
                 f"{len(meta.get('failed', []))} failed · median over repetitions (% of host)"), ""]
        findings = run.study_findings
    elif run.tune_meta:
        m = run.tune_meta
        head += [(f"lab {m.get('cni')} · path {m.get('path')} · {m.get('pairs')} pairs of {m.get('duration_s')} s runs · "
                 f"injections: {', '.join(m.get('injections') or ()) or 'none'}"), ""]
    top = finding_lines(findings, TOP_FINDINGS if run.kind != COMPARISON else len(findings), labels)
    tune = _tune_lines(run)
    fixed = len(head) + len(tail) + (len(top) + 3) + (len(tune) + 2 if tune else 0)
    budget = MAX_LINES - fixed
    if run.kind == TRACE and run.trace is not None:
        body = trace_lines(run.trace, budget)
    elif run.kind == COMPARISON:
        body = _comparison_lines(run, budget - 2)
    elif run.kind == STUDY:
        body = _study_lines(run, budget - 2)
    else:
        body = []
    lines = head + body + (["", "### Tune", "", *tune] if tune else [])
    if run.kind != TUNE:
        lines += ["", "### Top findings", "", *top]
    return "\n".join(lines[: MAX_LINES - len(tail)] + tail) + "\n"


def _tune_lines(run: RunDir) -> list[str]:
    if run.tune is None:
        return []
    rows = [[r["tuning"], r["generator"], r["metric"], fmt_gain(r["gain_median"]), r["verdict"]]
            for r in effects(run.tune)]
    return md_table(["tuning", "generator", "metric", "gain", "verdict"], rows, numeric=(3,), max_rows=8,
                    more="tunings")
