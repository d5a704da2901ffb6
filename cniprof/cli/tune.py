# SPDX-License-Identifier: Apache-2.0
"""cniprof tune: does a tuning help here? Paired before/after runs on the lab, gain with a 95 % CI, verdict.

The lab is used as it is, injected problems included (built if none is up, and removed afterwards then). Each
tuning runs --pairs pairs of (baseline, tuned) generator runs in ABBA order; the tuning is applied for the tuned
run only and reverted after it, so at the end (and after Ctrl-C) the lab is exactly as it was. Writes tune.json,
tune.csv (every run's printed numbers) and tune.png/.svg into --output (default: the --from run directory, or
runs/tune-<date>).
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lazy_loader

from cniprof.cli import commands
from cniprof.cni import registry
from cniprof.errors import UsageError
from cniprof.files import writable_dir
from cniprof.lab import cleanup, realize, saved
from cniprof.report import tune as tune_report
from cniprof.run import generators, inject, pod_to_service, trace
from cniprof.tune import measure, tunes
from cniprof.ui.console import wide_console

if TYPE_CHECKING:
    import pandas as pd
else:  # imported on first use: a command that does not need it does not wait for it
    pd = lazy_loader.load("pandas")

DEFAULT_PAIRS = 5
DEFAULT_DURATION_S = 3.0
MAX_PAIRS = 100
MAX_DURATION_S = 600.0


def register(sub: argparse._SubParsersAction) -> None:
    p = commands.add(sub, "tune", __doc__)
    p.add_argument("--cni", default="flannel", help="CNI model of the lab (default flannel)")
    p.add_argument("--path", default=None, choices=("cross-node", "same-node", "pod-to-host", "pod-to-service"),
                   help="pod pair (default: the tuning's own path, pod-to-service for kube-proxy tunings, else the "
                        "model's default path); pod-to-service sends to the ClusterIP of `lab inject services=N`")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--try", dest="tries", action="append", metavar="NAME",
                      help=f"tuning to measure (repeatable): {', '.join(tunes.TUNES)}")
    what.add_argument("--auto", action="store_true", help="every tuning advised in --from RUN_DIR's findings.json")
    p.add_argument("--from", dest="from_dir", type=commands.path, metavar="RUN_DIR",
                   help="run directory whose findings.json --auto reads (and the default --output)")
    p.add_argument("--pairs", type=commands.bounded(int, 1, MAX_PAIRS), default=DEFAULT_PAIRS,
                   help=f"pairs per tuning (default {DEFAULT_PAIRS})")
    p.add_argument("--duration", type=commands.bounded(float, 0.1, MAX_DURATION_S, " s"),
                   default=DEFAULT_DURATION_S,
                   help=f"seconds per run (default {DEFAULT_DURATION_S:g})")
    p.add_argument("--generator", choices=tuple(tunes.GENERATORS),
                   help="override the tuning's generator (default iperf3 TCP throughput; connect for "
                        "services/netfilter tunings)")
    p.add_argument("--output", type=commands.path, metavar="DIR", help="where to write tune.json/csv and the graph")
    p.set_defaults(func=run)


def advised(run_dir: Path) -> list[str]:
    """Distinct `tune` names of the advice in RUN_DIR/findings.json, in order (a list of findings, or an object
    with a `findings` list; items without advice or tune names are ignored)."""
    path = run_dir / "findings.json"
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{run_dir} has no findings.json (run `cniprof advise {run_dir}` first)") from None
    except (OSError, ValueError) as e:
        raise UsageError(f"{path}: unreadable: {e}".splitlines()[0]) from None
    findings = doc.get("findings", []) if isinstance(doc, dict) else doc
    names: list[str] = []
    for finding in findings if isinstance(findings, list) else []:
        advice = finding.get("advice") if isinstance(finding, dict) else None
        for item in advice if isinstance(advice, list) else []:
            name = item.get("tune") if isinstance(item, dict) else None
            if isinstance(name, str) and name and name not in names:
                names.append(name)
    return names


def _check(args: argparse.Namespace) -> None:
    if args.auto and args.from_dir is None:
        raise UsageError("--auto tries the tunings advised for a run: give it --from RUN_DIR")
    if args.from_dir is not None and not args.from_dir.is_dir():
        raise UsageError(f"--from {args.from_dir}: no such directory")


def _path(args: argparse.Namespace, model: Any, tune: tunes.Tune) -> str:
    return args.path or tune.path or model.default_path


def _service_ip(topo: Any, path: str, b: Any) -> str | None:
    """Where the generators send on pod-to-service: the injected ClusterIP (UsageError without one)."""

    if path != pod_to_service.PATH:
        return None
    service = inject.injected_service(topo)
    if service is None:
        raise UsageError(f"tune --path {path} needs kube-proxy services in the lab: "
                         "`cniprof lab inject services=N` first")
    pod_to_service.check_target(service, b)
    return service.cluster_ip


def run(args: argparse.Namespace) -> int:
    _check(args)
    console = wide_console()
    names = args.tries if not args.auto else advised(args.from_dir)
    skipped: list[dict[str, str]] = []
    chosen: list[tunes.Tune] = []
    for name in dict.fromkeys(names):
        try:
            chosen.append(tunes.get(name))
        except UsageError as e:
            if not args.auto:
                raise
            skipped.append({"tuning": name, "reason": str(e)})
    model = registry.parse(args.cni)
    for tune in chosen:
        trace.chain_for(model, _path(args, model, tune))  # UsageError naming the model's paths
    realize.require_root("tune (it builds and changes the lab)")
    generators.require_programs(tunes.generator(tune, args.generator) for tune in chosen)
    out = args.output or args.from_dir or Path("runs") / f"tune-{time.strftime('%Y%m%d-%H%M%S')}"
    writable_dir(out)  # refused before the lab is built or changed, not after every pair ran
    records: list[measure.Record] = []
    with ExitStack() as lab:  # the lab is this tune's alone, and one built here goes when it ends, however
        lab.enter_context(saved.in_use(shlex.join(["cniprof", "tune", *(args.tries or ["--auto"])])))
        topo, created = realize.up(model.cni, model.mode)
        if created:
            lab.callback(cleanup.teardown)
        paths = list(dict.fromkeys(_path(args, model, t) for t in chosen))
        meta: dict[str, Any] = {"cni": f"{topo.cni}:{topo.mode}", "path": ", ".join(paths),
                                "injections": list(topo.injections), "pairs": args.pairs, "duration_s": args.duration,
                                "tunings": {}, "skipped": skipped}
        for tune in chosen:
            path = _path(args, model, tune)
            a, b = trace.pick_pods(topo, path, None, None)
            meta.update(src=a.name, dst=b.name)
            dst_ip = _service_ip(topo, path, b)
            gen = tunes.generator(tune, args.generator)
            try:
                plan = measure.plan(topo, tune)
            except UsageError as e:
                if not args.auto:
                    raise
                skipped.append({"tuning": tune.name, "reason": str(e)})
                continue
            plural = "s" if args.pairs > 1 else ""
            console.print(f"[bold]{tune.name}[/]: {tune.summary}; {args.pairs} pair{plural} of {args.duration:g} s "
                          f"{gen.name} runs, {a.name} -> {b.name}")
            for line in plan.changes:
                console.print(f"  tuned runs: {line}", markup=False, highlight=False)

            def progress(pair: int, arm: str) -> None:
                console.print(f"  pair {pair + 1}/{args.pairs}: {arm}", style="dim")

            with ExitStack() as staged:
                if tune.prepare is not None:
                    console.print("  staging what the tuned runs switch to", style="dim")
                    tune.prepare(staged, topo)
                plan, done = measure.measure(topo, tune, gen, a, b, args.pairs, args.duration, progress, dst_ip)
            records += done
            meta["tunings"][tune.name] = {"summary": tune.summary, "generator": gen.name, "changes": plan.changes,
                                          "path": path, "dst_ip": dst_ip or b.ip}
    for s in skipped:
        console.print(f"[yellow]skipped[/] {s['tuning']}: {s['reason']}", highlight=False)
    if not records:
        raise UsageError("no tuning was measured" + (f" ({len(skipped)} skipped)" if skipped else ""))
    path = meta["path"]
    runs = pd.DataFrame([{**r.row(), "path": meta["tunings"][r.tuning]["path"]} for r in records])
    rows, files = tune_report.write(out, runs, meta)
    console.print(tune_report.rich_table(rows, f"tune on {meta['cni']} {path} "
                                               f"(injected: {', '.join(topo.injections) or 'none'})"))
    console.print(f"wrote {out}: {', '.join(f.name for f in files)}")
    return 0
