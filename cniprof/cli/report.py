# SPDX-License-Identifier: Apache-2.0
"""cniprof report: render a run directory again from its files (no root needed: only files are read).

RUN_DIR is a trace export (`cniprof trace --export`), a comparison export (`trace --cni a,b --export`), a study
(`cniprof run`) or a tune run (`cniprof tune`). A trace export is re-analysed from its raw snapshots: the final
table, path check, CPU and netfilter tables and findings are printed, and DIR (default RUN_DIR/report) gets the
flame graphs and findings; a comparison prints its table and renders each model so. For a study, DIR gets:
comparison.csv (median, 95 % CI, spread flag and % of host per model),
report.md (the same table and, for a traced study, the ranked findings of `cniprof advise`; also
findings.json/.csv), and the graphs as PNG and SVG: throughput, latency, hops-stacked (where the time
goes, per hop, per model) and, with several tuning variants, variants. A directory with tune.csv (from
`cniprof tune`) also gets its before/after table and tune.png/.svg; one with only tune.csv gets just those.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

import lazy_loader

from cniprof.advise import render
from cniprof.analysis.compare import COMPARE_CSV, Entry, compare
from cniprof.analysis.record import analyze_record
from cniprof.cli import commands
from cniprof.errors import UsageError
from cniprof.report import export, findings_graph, graphs, study
from cniprof.report import tune as tune_report
from cniprof.ui.compare_table import render_comparison
from cniprof.ui.console import wide_console
from cniprof.ui.run_summary import print_run

if TYPE_CHECKING:
    import pandas as pd
else:  # imported on first use: a command that does not need it does not wait for it
    pd = lazy_loader.load("pandas")


def register(sub: argparse._SubParsersAction) -> None:
    p = commands.add(sub, "report", __doc__)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                   help="a trace or comparison export, a study's or a tune run's directory")
    p.add_argument("--output", type=Path, metavar="DIR", help="where to write (default RUN_DIR/report)")
    p.add_argument("--hops-generator", metavar="NAME",
                   help="generator whose hop tables the stacked bars show (default: the first latency one)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    root: Path = args.run_dir
    if not root.is_dir():
        raise UsageError(f"{root} is not a directory: name a trace export, a comparison, a study or a tune run")
    tuned = tune_report.load(root)
    if (root / "metadata.json").is_file():
        return _study(args, tuned)
    if export.is_trace_export(root):
        return _trace(args, tuned)
    if export.is_comparison_export(root):
        return _comparison(args)
    if tuned is not None:
        return _tune_only(args, tuned)
    raise UsageError(f"{root} holds no cniprof run: expected summary.json + snapshot.json (a trace export), "
                     "compare.csv (a comparison), metadata.json (a study) or tune.csv (a tune run)")


def _trace(args: argparse.Namespace, tuned: pd.DataFrame | None) -> int:
    """A trace export: re-analysed from its raw snapshots, printed as `trace` printed it, views redrawn."""
    record = export.load_record(args.run_dir)
    analysis = analyze_record(record)
    out = args.output or args.run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    console = wide_console()
    print_run(console, record, analysis)
    console.print(render.table(analysis.findings, title=f"findings (cniprof advise {args.run_dir} for the advice "
                                                        "in full)", compact=True))
    written = export.write_views(out, record, analysis, str(args.run_dir))
    if tuned is not None:
        rows = tune_report.effects(tuned)
        written += [p.name for p in tune_report.graph(tuned, rows, out)]
        console.print(tune_report.rich_table(rows))
    console.print(f"wrote {', '.join(sorted(written))} to {out}")
    return 0


def _comparison(args: argparse.Namespace) -> int:
    """A comparison export: the comparison table from each model's re-analysed record, and each model's views."""
    records, skipped = export.load_comparison(args.run_dir)
    out = args.output or args.run_dir / "report"
    entries = []
    for spec, record in records:
        analysis = analyze_record(record)
        entries.append(Entry(spec, analysis.tables, record.traffic.get("throughput_bps"), record.sample_every))
        (out / export.model_dir(spec)).mkdir(parents=True, exist_ok=True)
        export.write_views(out / export.model_dir(spec), record, analysis, str(args.run_dir / export.model_dir(spec)))
    cmp = compare(entries, skipped)
    first = records[0][1] if records else None
    where = f" · {first.kernel} {first.arch}" if first is not None else ""
    console = wide_console()
    console.print(render_comparison(cmp, title=f"cniprof · comparison{where}"))
    cmp.to_csv(out / COMPARE_CSV)
    console.print(f"wrote {COMPARE_CSV} and each model's views ({', '.join(export.model_dir(s) for s, _ in records)}) "
                  f"to {out}")
    return 0


def _study(args: argparse.Namespace, tuned: pd.DataFrame | None) -> int:
    data = study.load(args.run_dir)
    if args.hops_generator and args.hops_generator not in set(data.results["generator"]):
        names = ", ".join(dict.fromkeys(data.results["generator"]))
        raise UsageError(f"no generator {args.hops_generator!r} in {args.run_dir}; generators: {names}")
    out = args.output or args.run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    table = study.comparison(data)
    table.to_csv(out / "comparison.csv", index=False)
    meta = data.metadata
    env = meta.get("environment", {})
    header = (f"# {meta['scenario']['name']}\n\nkernel {env.get('kernel')} ({env.get('arch')}), "
              f"{env.get('cpu_model')} x{env.get('cpus')}, cniprof {env.get('cniprof_version')}; "
              f"status {meta.get('status')}, {len(meta.get('runs', []))} runs, "
              f"{len(meta.get('failed', []))} failed\n\n")

    found = study.findings(data)
    if found:
        render.write(out, found, str(args.run_dir), "study")
        findings_graph.graph(found, out, f"findings · {meta['scenario']['name']}")
    (out / "report.md").write_text(header + study.markdown(data, table) + study.findings_markdown(found),
                                   encoding="utf-8")
    written = graphs.render_all(data, out)
    if args.hops_generator:
        written += graphs.hop_stacks(data, out, args.hops_generator)
    console = wide_console()
    console.print(study.rich_table(data, table))
    cpu = study.cpu_summary(data)
    if not cpu.empty:
        cpu.to_csv(out / "cpu_summary.csv", index=False)
        console.print(study.cpu_rich_table(data, cpu))
    if tuned is not None:
        rows = tune_report.effects(tuned)
        written += tune_report.graph(tuned, rows, out)
        console.print(tune_report.rich_table(rows))
    if found:
        console.print(render.table(found, title="findings (cniprof advise RUN_DIR for the advice in full)",
                                   compact=True))
    console.print(f"wrote {out}/comparison.csv, report.md and {len(written)} graph files")
    return 0


def _tune_only(args: argparse.Namespace, tuned: pd.DataFrame) -> int:
    """RUN_DIR holds only `cniprof tune` results: their table and before/after graph."""

    out = args.output or args.run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    rows = tune_report.effects(tuned)
    written = tune_report.graph(tuned, rows, out)
    console = wide_console()
    console.print(tune_report.rich_table(rows))
    console.print(f"wrote {out}: {len(written)} graph files")
    return 0
