# SPDX-License-Identifier: Apache-2.0
"""cniprof report: render a study's run directory again (no root needed: only files are read).

Writes into DIR (default RUN_DIR/report): comparison.csv (median, 95 % CI, spread flag and % of host per model),
report.md (the same table and, for a traced study, the ranked findings of `cniprof advise`; also
findings.json/.csv), and the graphs as PNG and SVG: throughput, latency, hops-stacked (where the time
goes, per hop, per model) and, with several tuning variants, variants. A directory with tune.csv (from
`cniprof tune`) also gets its before/after table and tune.png/.svg; one with only tune.csv gets just those.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from cniprof.advise import render
from cniprof.errors import UsageError
from cniprof.report import findings_graph, graphs, study
from cniprof.report import tune as tune_report
from cniprof.ui.console import wide_console

if TYPE_CHECKING:
    import pandas as pd


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="tables and graphs of a study's run directory (from `cniprof run`)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run directory written by `cniprof run`")
    p.add_argument("--output", type=Path, metavar="DIR", help="where to write (default RUN_DIR/report)")
    p.add_argument("--hops-generator", metavar="NAME",
                   help="generator whose hop tables the stacked bars show (default: the first latency one)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:

    tuned = tune_report.load(args.run_dir)
    if tuned is not None and not (args.run_dir / "metadata.json").is_file():
        return _tune_only(args, tuned)  # a `cniprof tune` directory, not a study's
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
