# SPDX-License-Identifier: Apache-2.0
"""cniprof report: render a run directory again from its files (no root needed: only files are read).

RUN_DIR is a trace export (`cniprof trace --export`), a comparison export (`trace --cni a,b --export`), a study
(`cniprof run`) or a tune run (`cniprof tune`). Every kind gets, in DIR (default RUN_DIR/report), the report to
attach to a bug: report.html (one self-contained page: header, hop tables, hop and CPU flame graphs to zoom and
search, netfilter, drops, findings with advice, and the tables and graphs of a comparison, study or tune run),
report.md (paste-ready Markdown, under 60 lines) and, for traces and comparisons, hops-flame.png and
cpu-flame.png; --bundle also writes cniprof-<cni>-<date>.tar.gz, the run's files, from which `cniprof report`
renders the same report anywhere.

A trace export is re-analysed from its raw snapshots: the final table, path check, CPU and netfilter tables and
findings are printed, and DIR gets the flame graphs and findings; a comparison prints its table and renders each
model so. For a study, DIR gets comparison.csv (median, 95 % CI, spread flag and % of host per model),
findings.json/.csv and the graphs as PNG and SVG: throughput, latency, hops-stacked (where the time goes, per
hop, per model) and, with several tuning variants, variants. A directory with tune.csv (from `cniprof tune`) also
gets its before/after table and tune.png/.svg.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from cniprof.advise import render
from cniprof.analysis.compare import COMPARE_CSV
from cniprof.cli import commands
from cniprof.errors import UsageError
from cniprof.report import attach, findings_graph, graphs, rundir, study
from cniprof.report import tune as tune_report
from cniprof.report.export import model_dir, write_views
from cniprof.ui.compare_table import render_comparison
from cniprof.ui.console import wide_console
from cniprof.ui.run_summary import print_run


def register(sub: argparse._SubParsersAction) -> None:
    p = commands.add(sub, "report", __doc__)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                   help="a trace or comparison export, a study's or a tune run's directory")
    p.add_argument("--output", type=Path, metavar="DIR", help="where to write (default RUN_DIR/report)")
    p.add_argument("--bundle", action="store_true",
                   help="also write cniprof-<cni>-<date>.tar.gz: the run's files, to attach to a bug")
    p.add_argument("--hops-generator", metavar="NAME",
                   help="generator whose hop tables the stacked bars show (default: the first latency one)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    data = rundir.load(args.run_dir)
    if args.hops_generator and data.study is None:
        raise UsageError("--hops-generator is for a study's run directory (from `cniprof run`)")
    out = args.output or args.run_dir / attach.REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    console = wide_console()
    images: list[Path] = []
    if data.kind == rundir.TRACE:
        _trace(args, data, out, console)
    elif data.kind == rundir.COMPARISON:
        _comparison(args, data, out, console)
    elif data.kind == rundir.STUDY:
        images += _study(args, data, out, console)
    if data.tune is not None:
        rows = tune_report.effects(data.tune)
        images += tune_report.graph(data.tune, rows, out)
        console.print(tune_report.rich_table(rows))
    written = attach.write(data, out, images=[p for p in images if p.suffix == ".png"], bundle=args.bundle)
    print_written(console, written, out)
    return 0


def print_written(console: Console, written: attach.Written, out: Path) -> None:
    """Where the report went (and the bundle: path and size), as `report` and `trace --export` end."""
    html = written.html
    others = ", ".join(p.name for p in written.files if p != html)
    console.print(f"report: {html} ({html.stat().st_size / 1e6:.2f} MB) · also {others} in {out}", highlight=False)
    if written.bundle is not None:
        b = written.bundle
        console.print(f"bundle: {b.path} ({b.size / 1e6:.2f} MB, {b.files} files)"
                      + (f"; symbolic links left out: {', '.join(b.skipped_links)}" if b.skipped_links else ""),
                      highlight=False)


def _trace(args: argparse.Namespace, data: rundir.RunDir, out: Path, console: Console) -> None:
    """A trace export: re-analysed from its raw snapshots, printed as `trace` printed it, views redrawn."""
    t = data.trace
    assert t is not None and t.record is not None and t.analysis is not None
    print_run(console, t.record, t.analysis)
    console.print(render.table(t.findings, title=f"findings (cniprof advise {args.run_dir} for the advice in full)",
                               compact=True))
    written = write_views(out, t.record, t.analysis, str(args.run_dir))
    console.print(f"wrote {', '.join(sorted(written))} to {out}")


def _comparison(args: argparse.Namespace, data: rundir.RunDir, out: Path, console: Console) -> None:
    """A comparison export: the comparison table from each model's re-analysed record, and each model's views."""
    assert data.comparison is not None
    for t in data.models:
        assert t.record is not None and t.analysis is not None
        (out / t.name).mkdir(parents=True, exist_ok=True)
        write_views(out / t.name, t.record, t.analysis, str(args.run_dir / t.name))
    first = data.models[0].record if data.models else None
    where = f" · {first.kernel} {first.arch}" if first is not None else ""
    console.print(render_comparison(data.comparison, title=f"cniprof · comparison{where}"))
    data.comparison.to_csv(out / COMPARE_CSV)
    console.print(f"wrote {COMPARE_CSV} and each model's views ({', '.join(model_dir(t.spec) for t in data.models)}) "
                  f"to {out}")


def _study(args: argparse.Namespace, data: rundir.RunDir, out: Path, console: Console) -> list[Path]:
    """A study's comparison.csv, findings and graphs (the tables printed); returns the graph files."""
    s = data.study
    assert s is not None
    if args.hops_generator and args.hops_generator not in set(s.results["generator"]):
        names = ", ".join(dict.fromkeys(s.results["generator"]))
        raise UsageError(f"no generator {args.hops_generator!r} in {args.run_dir}; generators: {names}")
    table = study.comparison(s)
    table.to_csv(out / "comparison.csv", index=False)
    found = data.study_findings
    written = graphs.render_all(s, out)
    if args.hops_generator:
        written += graphs.hop_stacks(s, out, args.hops_generator)
    if found:
        render.write(out, found, str(args.run_dir), "study")
        written += findings_graph.graph(found, out, f"findings · {s.metadata['scenario']['name']}")
    console.print(study.rich_table(s, table))
    cpu = study.cpu_summary(s)
    if not cpu.empty:
        cpu.to_csv(out / "cpu_summary.csv", index=False)
        console.print(study.cpu_rich_table(s, cpu))
    if found:
        console.print(render.table(found, title="findings (cniprof advise RUN_DIR for the advice in full)",
                                   compact=True))
    console.print(f"wrote comparison.csv and {len(written)} graph files to {out}")
    return written
