# SPDX-License-Identifier: Apache-2.0
"""cniprof report: render a run directory again, from its files only (no root needed).

RUN_DIR is a trace export (`cniprof trace --export`), a comparison (`trace --cni A,B --export`), a study
(`cniprof run`) or a tune run (`cniprof tune`). Every kind gets the report to attach to a bug: report.html (one
self-contained page: header, hop tables, hop and CPU flame graphs to zoom and search, netfilter, drops, findings
with advice, and the tables and graphs of a comparison, study or tune run), report.md (paste-ready Markdown,
under 60 lines), hops-flame.png and cpu-flame.png (traces and comparisons); --bundle also writes
cniprof-<cni>-<date>.tar.gz, the run's files, from which `cniprof report` renders the same report anywhere.

A study also gets comparison.csv (median, 95 % CI, spread flag and % of host per model), findings.json/.csv and
its graphs as PNG and SVG: throughput, latency, hops-stacked (where the time goes, per hop, per model), variants
with several tuning variants; a directory with tune.csv its before/after table and tune.png/.svg.
Output goes to --output, by default RUN_DIR itself for a trace or comparison and RUN_DIR/report for a study
or tune run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cniprof.advise import render
from cniprof.errors import UsageError
from cniprof.report import attach, findings_graph, graphs, rundir, study
from cniprof.report import tune as tune_report
from cniprof.ui.console import wide_console


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="report.html, report.md and graphs of a run directory (trace, study, tune)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                   help="directory written by `cniprof trace --export`, `cniprof run` or `cniprof tune`")
    p.add_argument("--output", type=Path, metavar="DIR",
                   help="where to write (default RUN_DIR for a trace or comparison, RUN_DIR/report otherwise)")
    p.add_argument("--bundle", action="store_true",
                   help="also write cniprof-<cni>-<date>.tar.gz: the run's files, to attach to a bug")
    p.add_argument("--hops-generator", metavar="NAME",
                   help="study: generator whose hop tables the stacked bars show (default: the first latency one)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    data = rundir.load(args.run_dir)
    if args.hops_generator and data.study is None:
        raise UsageError("--hops-generator is for a study's run directory (from `cniprof run`)")
    out = args.output or (args.run_dir if data.kind in (rundir.TRACE, rundir.COMPARISON) else args.run_dir / "report")
    out.mkdir(parents=True, exist_ok=True)
    console = wide_console()
    images: list[Path] = []
    if data.study is not None:
        images += _study_files(args, data, out, console)
    if data.tune is not None:
        rows = tune_report.effects(data.tune)
        images += tune_report.graph(data.tune, rows, out)
        console.print(tune_report.rich_table(rows))
    written = attach.write(data, out, images=[p for p in images if p.suffix == ".png"], bundle=args.bundle)
    html = written.html
    others = ", ".join(p.name for p in written.files if p != html)
    console.print(f"report: {html} ({html.stat().st_size / 1e6:.2f} MB) · also {others}"
                  + (f" and {len(images)} graph files" if images else "") + f" in {out}", highlight=False)
    if written.bundle is not None:
        b = written.bundle
        console.print(f"bundle: {b.path} ({b.size / 1e6:.2f} MB, {b.files} files)"
                      + (f"; symbolic links left out: {', '.join(b.skipped_links)}" if b.skipped_links else ""),
                      highlight=False)
    return 0


def _study_files(args: argparse.Namespace, data: rundir.RunDir, out: Path, console) -> list[Path]:
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
    return written
