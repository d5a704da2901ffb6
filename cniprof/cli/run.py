# SPDX-License-Identifier: Apache-2.0
"""cniprof run: execute a study described by a scenario file (scenarios/*.yaml) into a run directory.

For each model (its lab built once), path, tuning variant, generator and repetition: the generator runs between
two pods while the hop probe traces, and both are recorded in RUN_DIR (metadata.json, results, stats, hop
tables, runs/<id>/). `cniprof report RUN_DIR` renders the tables and graphs again later, without root.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from cniprof.analysis.summary import analyze
from cniprof.cli import commands
from cniprof.errors import CniprofError, EnvironmentProblem, UsageError
from cniprof.files import writable_dir
from cniprof.report import study
from cniprof.study import runner
from cniprof.study.scenario import load as load_scenario
from cniprof.ui.live import render_live


def register(sub: argparse._SubParsersAction) -> None:
    p = commands.add(sub, "run", __doc__)
    p.add_argument("scenario", type=commands.path, metavar="SCENARIO", help="scenario file, e.g. scenarios/cni-comparison.yaml")
    p.add_argument("--output", type=commands.path, metavar="RUN_DIR",
                   help="run directory to write (default ./runs/<scenario>-<date>); must not hold another study")
    p.add_argument("--repetitions", type=commands.bounded(int, 1, 100), metavar="N",
                   help="override the scenario's repetitions (a quick pass)")
    p.add_argument("--duration", type=commands.bounded(float, 1, 600, " s"), metavar="S",
                   help="override the scenario's duration_s per run")
    p.add_argument("--check", action="store_true", help="only validate the scenario and print its plan")
    p.set_defaults(func=run)


def _out_dir(args: argparse.Namespace, name: str) -> Path:
    out = args.output or Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if (out / "metadata.json").exists():
        raise UsageError(f"{out} already holds a study (metadata.json); choose another --output")
    return writable_dir(out)  # refused before any lab is built


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    scen = load_scenario(args.scenario)
    if args.repetitions is not None:
        scen = dataclasses.replace(scen, repetitions=args.repetitions)
    if args.duration is not None:
        scen = dataclasses.replace(scen, duration_s=args.duration)
    if not args.check:  # what would stop the study, before its plan is printed: one line, nothing built
        if os.geteuid() != 0:
            raise EnvironmentProblem("cniprof run needs root (labs, BPF): run with sudo")
        out = _out_dir(args, scen.name)
        runner.preflight(scen)
    models, skipped = runner.resolve_models(scen)
    runs, skipped_paths = runner.plan(scen, models)
    for s in skipped + skipped_paths:
        console.print(f"[dim]skipped {s['model']}{' ' + s['path'] if 'path' in s else ''}: {s['reason']}[/dim]")
    per_run = scen.duration_s + 4.0  # setup, attach, teardown of one run (measured: ~3-5 s here)
    console.print(f"{scen.name}: {len(runs)} runs on {len(models)} models, ~{len(runs) * per_run / 60:.0f} min")
    if args.check:
        return 0
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("ETA"), TimeRemainingColumn())
    progress = Progress(*columns, console=console)
    task = progress.add_task(scen.name, total=len(runs))
    frame: dict[str, Any] = {"run": Text("")}

    def screen() -> Group:
        return Group(progress, frame["run"])

    with Live(screen(), console=console, refresh_per_second=2, transient=False) as live:
        def update(current: runner.Run | None, done: int, total: int) -> None:
            progress.update(task, completed=done, description=current.run_id if current is not None else "done")
            frame["run"] = Text("")
            live.update(screen())

        def show(current: runner.Run, snapshot: dict[str, Any], elapsed: float, total: float) -> None:
            # the run's hops as the trace's live view shows them: where the time goes while it runs
            frame["run"] = render_live(f"{current.model_name} · {current.path} · {current.variant.name} · "
                                       f"{current.generator.name} r{current.repetition}", analyze(snapshot),
                                       (min(elapsed, total), total))
            live.update(screen())

        archive = runner.run_scenario(scen, out, args.scenario.read_text(encoding="utf-8"), update, show)
        frame["run"] = Text("")
        live.update(screen())

    data = study.load(out)
    console.print(study.rich_table(data))
    cpu = study.cpu_rich_table(data)
    if cpu is not None:
        console.print(cpu)
    failed = archive.meta["failed"]
    for f in failed:
        console.print(f"[red]failed[/red] {f['run_id']}: {f['error']}")
    console.print(f"run directory: {out}  (render: cniprof report {out})")
    if failed:
        raise CniprofError(f"{len(failed)} of {len(runs)} runs failed (listed above and in {out}/metadata.json)")
    return 0
