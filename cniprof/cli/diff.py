# SPDX-License-Identifier: Apache-2.0
"""cniprof diff: compare the CPU profiles of two recorded runs; writes a differential flame graph.

RUN_A and RUN_B are export directories of `cniprof trace --cpu --export DIR` (or cpu.json / folded files).
Shares are normalised by each run's busy samples, so runs of different length or sampling frequency compare.
Works without root: only files are read.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table
from rich.text import Text

from cniprof.cli import commands
from cniprof.errors import UsageError
from cniprof.files import write_text
from cniprof.report.cpu_profile import component_changes, is_datapath, load_profile
from cniprof.report.flame_svg import diff_svg
from cniprof.ui.console import wide_console

DEFAULT_OUT = "cpu-diff.svg"


def register(sub: argparse._SubParsersAction) -> None:
    p = commands.add(sub, "diff", __doc__)
    p.add_argument("run_a", type=Path, metavar="RUN_A", help="the baseline run (export dir, cpu.json or folded)")
    p.add_argument("run_b", type=Path, metavar="RUN_B", help="the run compared against it")
    p.add_argument("--out", type=Path, default=Path(DEFAULT_OUT),
                   help=f"differential flame graph SVG to write (default ./{DEFAULT_OUT})")
    p.add_argument("--top", type=int, default=10, help="component changes to print (default 10)")
    p.add_argument("--comm", action="append", default=[], metavar="NAME",
                   help="only samples of processes whose name starts with NAME (repeatable), e.g. --comm iperf3 "
                        "--comm ksoftirqd: leaves out other work that ran on the machine during either run")
    p.set_defaults(func=run)


def _changes_table(changes, a_name: str, b_name: str, top: int) -> Table:
    t = Table(title=f"CPU by component: {a_name} → {b_name} (share of busy samples)", title_justify="left")
    t.add_column("component")
    t.add_column(a_name, justify="right")
    t.add_column(b_name, justify="right")
    t.add_column("change", justify="right")
    t.add_column("samples", justify="right")
    for _, r in changes.head(top).iterrows():
        d = float(r["delta_pp"])
        style = "red" if d > 0.05 else "blue" if d < -0.05 else ""
        name = Text(str(r["component"]), style="" if is_datapath(str(r["component"])) else "dim")
        t.add_row(name, f"{r['a_pct']:.1f}%", f"{r['b_pct']:.1f}%", Text(f"{d:+.1f} pp", style=style),
                  f"{int(r['a_samples']):,} → {int(r['b_samples']):,}")
    return t


def run(args: argparse.Namespace) -> int:
    if args.top < 1:
        raise UsageError(f"--top must be at least 1, not {args.top}")
    comms = tuple(args.comm)
    a, b = load_profile(args.run_a, comms), load_profile(args.run_b, comms)
    for prof, path in ((a, args.run_a), (b, args.run_b)):
        if not prof.folded:
            raise UsageError(f"{path}: no busy samples" + (f" of {', '.join(comms)}" if comms else ""))
    if a.name == b.name:  # two runs called "run" in different places: keep the labels apart
        a_name, b_name = f"A:{a.name}", f"B:{b.name}"
    else:
        a_name, b_name = a.name, b.name
    svg = diff_svg(a.folded, b.folded, title=f"CPU: {a_name} → {b_name}", a_name=a_name, b_name=b_name)
    out = Path(args.out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot write {out}: {e.strerror}") from None
    write_text(out, svg)
    console = wide_console()
    changes = component_changes(a, b)
    console.print(_changes_table(changes, a_name, b_name, args.top))
    top = changes.iloc[0] if len(changes) else None
    if top is not None:
        verb = "grew" if top["delta_pp"] > 0 else "shrank"
        console.print(f"largest change: {top['component']} {verb} by {abs(top['delta_pp']):.1f} percentage points "
                      f"of busy CPU")
    scope = f" · processes {', '.join(comms)}*" if comms else ""
    console.print(f"wrote {out} (red = larger share in {b_name}, blue = smaller){scope}")
    return 0
