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

from rich.console import Console

from cniprof.analysis import path_check
from cniprof.analysis.compare import Entry, Skipped, compare
from cniprof.analysis.cpu import analyze_cpu, traffic_bytes, with_cpu
from cniprof.analysis.summary import Analysis, analyze
from cniprof.cni import registry
from cniprof.cni.model import PATHS as MODEL_PATHS
from cniprof.cni.model import Model
from cniprof.errors import CniprofError, UsageError
from cniprof.lab import kernel
from cniprof.probes.hops_abi import ATTACH_POINT
from cniprof.report.export import export
from cniprof.report.flames import export_flames
from cniprof.run import trace
from cniprof.ui.compare_table import render_comparison

COMPARE_CSV = "compare.csv"


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


def _dir_name(model: Model) -> str:
    return f"{model.cni}-{model.mode}"


def run(args: argparse.Namespace, base: trace.TraceOptions) -> int:
    """`base` carries every option but the model; path defaults to cross-node for all (one path per table)."""
    for flag in ("nf", "services"):
        if getattr(args, flag, None) not in (None, False):
            raise UsageError(f"--{flag} is not supported in a comparison; trace one model at a time")
    models = parse_models(args.cni)
    path = base.path or "cross-node"
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)

    runnable: list[tuple[Model, trace.TraceOptions]] = []
    skipped: list[Skipped] = []
    for model in models:
        opts = dataclasses.replace(base, cni=model.spec, path=path)
        try:
            trace.preflight(opts)
        except CniprofError as e:
            if not _own_problem(model, path):
                raise
            skipped.append(Skipped(model.spec, str(e)))
            continue
        runnable.append((model, opts))
    if not runnable:
        raise UsageError("none of the models can be traced here: "
                         + "; ".join(f"{s.spec}: {s.reason}" for s in skipped))

    entries: list[Entry] = []
    for i, (model, opts) in enumerate(runnable, 1):
        console.print(f"[{i}/{len(runnable)}] {model.spec} · {path} · {opts.traffic}", highlight=False)
        try:
            result = trace.run(opts)
        except CniprofError as e:
            skipped.append(Skipped(model.spec, f"failed: {e}"))
            console.print(f"  failed: {e}", markup=False, highlight=False)
            continue
        chain = model.chain(path) if path in MODEL_PATHS else None
        analysis = analyze(result.snapshot, chain)
        check = path_check.check(result.snapshot)
        console.print(f"  {result.duration_s:.1f} s · {check.lines()[0]}", markup=False, highlight=False)
        entries.append(Entry(model.spec, analysis, result.traffic.get("throughput_bps"),
                             result.extra.get("sampling", {}).get("every")))
        if args.export:
            _export(args.export / _dir_name(model), model, result, analysis)
    if not entries:
        raise CniprofError("no model could be traced: " + "; ".join(f"{s.spec}: {s.reason}" for s in skipped))

    cmp = compare(entries, skipped)
    title = f"cniprof · comparison · {path} · {base.traffic} · {platform.release()} {platform.machine()}"
    console.print(render_comparison(cmp, title=title))
    if args.export:
        args.export.mkdir(parents=True, exist_ok=True)
        cmp.to_csv(args.export / COMPARE_CSV)
        dirs = ", ".join(_dir_name(m) for m, _ in runnable if m.spec in cmp.models)
        console.print(f"exported {COMPARE_CSV} and per-model files ({dirs}) to {args.export}", highlight=False)
    return 0


def _export(out, model: Model, result: trace.TraceResult, analysis: Analysis) -> None:
    """The files a single-model trace writes (hops, drops, summary, snapshot, flame graphs), for one model."""
    extra = result.extra
    if result.cpu is not None:
        cpu = analyze_cpu(result.cpu, analysis.hops, traffic_bytes(result.traffic), extra["sampling"]["every"])
        analysis, extra = with_cpu(analysis, cpu), {**extra, "cpu": cpu.summary}
    export(out, result.snapshot, analysis=analysis, cni=model.cni, mode=model.mode, duration_s=result.duration_s,
           traffic=result.traffic, probes=[ATTACH_POINT[p] for p in result.probes], extra=extra)
    e2e = dict(zip(analysis.e2e["direction"], analysis.e2e["mean_us"]))
    export_flames(out, analysis.hops, result.cpu, e2e_mean_us=e2e, title=f"cniprof · {model.spec}")
