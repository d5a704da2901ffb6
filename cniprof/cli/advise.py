# SPDX-License-Identifier: Apache-2.0
"""cniprof advise: ranked findings of a run directory, each with its evidence and the tunings that address it.

RUN_DIR is a `cniprof trace --export` directory (hops.csv, summary.json, nodestate.json, nf.csv, drops.csv) or a
study's run directory (`cniprof run`: findings per model, path and variant over its repetitions). Faults (a
threshold exceeded) rank above observations (e.g. the dominant hop of a healthy path); within each, by the share of
end-to-end latency or busy CPU the finding accounts for. Writes findings.json and findings.csv into RUN_DIR (or
--output). No root needed.
"""

from __future__ import annotations

import argparse
import json
import sys

from cniprof.advise import render
from cniprof.advise.engine import advise
from cniprof.cli import commands
from cniprof.errors import UsageError
from cniprof.files import writable_dir
from cniprof.report import findings_graph
from cniprof.ui.console import wide_console


def register(sub: argparse._SubParsersAction) -> None:
    p = commands.add(sub, "advise", __doc__)
    p.add_argument("run_dir", type=commands.path, metavar="RUN_DIR", help="trace export or study run directory")
    p.add_argument("--json", action="store_true", help="print findings.json to stdout instead of the table")
    p.add_argument("--output", type=commands.path, metavar="DIR", help="where to write findings.json/.csv (default RUN_DIR)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.run_dir.is_dir():
        raise UsageError(f"{args.run_dir} is not a directory")
    out = writable_dir(args.output or args.run_dir)  # refused before the run is read
    kind, findings = advise(args.run_dir)
    render.write(out, findings, str(args.run_dir), kind)
    findings_graph.graph(findings, out, f"findings · {args.run_dir.name}")
    if args.json:
        json.dump(render.document(findings, str(args.run_dir), kind), sys.stdout, indent=2, ensure_ascii=False,
                  default=str)
        print()
        return 0
    console = wide_console()
    console.print(render.table(findings, title=f"findings · {args.run_dir}"))
    return 0
