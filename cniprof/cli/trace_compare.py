# SPDX-License-Identifier: Apache-2.0
"""`cniprof trace --cni A,B,...`: the same traffic on each model in turn, then one comparison table.

Each model is a normal trace run (its lab built, traced and removed before the next one starts, so the models
never share the CPU); the comparison itself is cniprof.analysis.compare. A model that cannot be traced here for a reason
of its own (a kernel option it needs, a path it does not have) is reported as skipped with that reason, and a
model whose run fails is reported as failed, so one missing model does not cost the others' numbers. Problems
every model would hit (not root, no BTF, a missing tool) stop the comparison at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
from typing import TYPE_CHECKING

import lazy_loader

from cniprof.cni import registry
from cniprof.cni.model import PATHS as MODEL_PATHS
from cniprof.cni.model import Model
from cniprof.errors import CniprofError, UsageError
from cniprof.lab import kernel
from cniprof.run import trace

if TYPE_CHECKING:
    from cniprof.analysis import compare as compare_mod
    from cniprof.analysis import record as record_mod
    from cniprof.cli import report as report_cli
    from cniprof.report import attach, export, rundir
    from cniprof.ui import compare_table
    from cniprof.ui import console as ui_console
else:  # imported on first use: `trace` imports this module for is_comparison (a single model needs none of it)
    compare_mod = lazy_loader.load("cniprof.analysis.compare", suppress_warning=True)
    record_mod = lazy_loader.load("cniprof.analysis.record", suppress_warning=True)
    report_cli = lazy_loader.load("cniprof.cli.report", suppress_warning=True)
    attach = lazy_loader.load("cniprof.report.attach", suppress_warning=True)
    export = lazy_loader.load("cniprof.report.export", suppress_warning=True)
    rundir = lazy_loader.load("cniprof.report.rundir", suppress_warning=True)
    compare_table = lazy_loader.load("cniprof.ui.compare_table", suppress_warning=True)
    ui_console = lazy_loader.load("cniprof.ui.console", suppress_warning=True)


def is_comparison(cni: str) -> bool:
    return "," in cni


def parse_models(spec: str) -> list[Model]:
    """Comma-separated model specs, each once, in the order given; an unknown one is a usage error."""
    models: list[Model] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if part.lower() == "auto":
            raise UsageError("--cni auto traces the live node and cannot be part of a comparison")
        model = registry.parse(part)
        if model not in models:
            models.append(model)
    if len(models) < 2:
        raise UsageError(f"a comparison needs at least two different models, not {spec!r}")
    return models


def _own_problem(model: Model, path: str) -> bool:
    """Whether a preflight error is this model's alone (skip it) rather than one every model would hit."""
    return (path in MODEL_PATHS and path not in model.paths) or bool(kernel.missing(model.requires))


def run(args: argparse.Namespace, base: trace.TraceOptions) -> int:
    """`base` carries every option but the model; path defaults to cross-node for all (one path per table)."""
    for flag in ("nf", "services"):
        if getattr(args, flag, None) not in (None, False):
            raise UsageError(f"--{flag} is not supported in a comparison; trace one model at a time")
    models = parse_models(args.cni)
    path = base.path or "cross-node"
    console = ui_console.wide_console()

    runnable: list[tuple[Model, trace.TraceOptions]] = []
    skipped: list[compare_mod.Skipped] = []
    for model in models:
        opts = dataclasses.replace(base, cni=model.spec, path=path)
        try:
            runnable.append((trace.preflight(opts), opts))
        except CniprofError as e:  # this model's own problem: skipped with its reason, the others still run
            if not _own_problem(model, path):
                raise
            skipped.append(compare_mod.Skipped(model.spec, str(e)))
    if not runnable:
        raise UsageError("none of the models can be traced here: "
                         + "; ".join(f"{s.spec}: {s.reason}" for s in skipped))

    entries: list[compare_mod.Entry] = []
    for i, (model, opts) in enumerate(runnable, 1):
        console.print(f"[{i}/{len(runnable)}] {model.spec} · {path} · {opts.traffic}", highlight=False)
        try:
            record = trace.run(opts, model=model).record
        except CniprofError as e:
            skipped.append(compare_mod.Skipped(model.spec, f"failed: {e}"))
            console.print(f"  failed: {e}", markup=False, highlight=False)
            continue
        analysis = record_mod.analyze_record(record)
        check = analysis.check.lines()[0] if analysis.check is not None else "no path check"
        console.print(f"  {record.duration_s:.1f} s · {check}", markup=False, highlight=False)
        entries.append(compare_mod.Entry(model.spec, analysis.tables, record.traffic.get("throughput_bps"), record.sample_every))
        if args.export:
            export.export_trace(args.export / export.model_dir(model.spec), record, analysis)
    if not entries:
        raise CniprofError("no model could be traced: " + "; ".join(f"{s.spec}: {s.reason}" for s in skipped))

    cmp = compare_mod.compare(entries, skipped)
    title = f"cniprof · comparison · {path} · {base.traffic} · {platform.release()} {platform.machine()}"
    console.print(compare_table.render_comparison(cmp, title=title))
    if args.export:
        args.export.mkdir(parents=True, exist_ok=True)
        cmp.to_csv(args.export / compare_mod.COMPARE_CSV)
        dirs = ", ".join(export.model_dir(m.spec) for m, _ in runnable if m.spec in cmp.models)
        console.print(f"exported {compare_mod.COMPARE_CSV} and per-model files ({dirs}) to {args.export}", highlight=False)
        out = args.export / attach.REPORT_DIR
        report_cli.print_written(console, attach.write(rundir.load(args.export), out), out)
    return 0

