# SPDX-License-Identifier: Apache-2.0
"""Run a scenario: for each model (lab up once), path, variant, generator and repetition, one run.

Design (the simplest correct one given the engine's contracts): the generator is started first from the main
thread (its processes die with the thread that started them), then `trace.run(TraceOptions(traffic="none"))`
attaches the hop probe and traces for the scenario's duration in the main thread (it installs a SIGTERM handler,
which only the main thread may), and the generator is waited for afterwards. The generator runs longer than the
trace by the trace's set-up time (BPF load and attach, sampling calibration: 1-3 s depending on the model's
point count), measured on each run and used for the model's next one; so the probe always sees traffic, and its
auto-sampling calibration sees the real load. A generator whose traffic starts late (sockperf's 2 s warm-up,
generators.STARTUP_S) gets a trace longer by that delay. The study's numbers are the ones the generator printed (over its
whole run; with tracing for about `duration_s` of it). The lab is brought up once per model with `realize.up` and torn down after that model's runs
if this study built it; trace.run sees it up and leaves it alone.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from cniprof.bench import generators, tunings
from cniprof.bench.archive import RunArchive
from cniprof.cni import registry
from cniprof.cni.model import Model
from cniprof.errors import CniprofError, EnvironmentProblem
from cniprof.lab import cleanup, kernel, realize
from cniprof.scenario import GeneratorSpec, Scenario, Variant

log = logging.getLogger(__name__)
DEFAULT_SETUP_S = 3.0  # trace set-up time assumed before a model's first run measured it
SETUP_MARGIN_S = 0.5


@dataclass(frozen=True)
class Run:
    index: int
    model: Model
    path: str
    variant: Variant
    generator: GeneratorSpec
    repetition: int

    @property
    def model_name(self) -> str:
        return self.model.spec

    @property
    def run_id(self) -> str:
        raw = f"{self.index:03d}-{self.model_name}-{self.path}-{self.variant.name}-{self.generator.name}-r{self.repetition}"
        return re.sub(r"[^A-Za-z0-9._-]+", "_", raw)

    def record(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "model": self.model_name, "path": self.path, "variant": self.variant.name,
                "generator": self.generator.name, "tool": self.generator.tool, "repetition": self.repetition,
                "params": self.generator.params, "tunings": self.variant.tunings}


def resolve_models(scenario: Scenario) -> tuple[list[Model], list[dict[str, Any]]]:
    """The scenario's models (`all`: every registered one) with those this kernel cannot build set aside."""
    wanted = registry.models() if scenario.models == ("all",) else [registry.parse(m) for m in scenario.models]
    usable, skipped = [], []
    buildable = set(realize.supported())
    for model in wanted:
        if f"{model.cni}:{model.mode}" not in buildable:
            skipped.append({"model": model.spec, "reason": f"no lab recipe builds {model.spec} yet"})
            continue
        try:
            kernel.require(model.spec, model.requires)
        except EnvironmentProblem as e:
            skipped.append({"model": model.spec, "reason": str(e)})
            continue
        usable.append(model)
    return usable, skipped


def plan(scenario: Scenario, models: list[Model]) -> tuple[list[Run], list[dict[str, Any]]]:
    """Every run in execution order (model-major: one lab per model) and the (model, path) pairs skipped."""
    runs: list[Run] = []
    skipped = []
    for model in models:
        for path in scenario.paths:
            if path not in model.paths:
                skipped.append({"model": model.spec, "path": path, "reason": f"{model.spec} has no {path} path"})
                continue
            for variant in scenario.variants:
                for gen in scenario.generators:
                    for rep in range(1, scenario.repetitions + 1):
                        runs.append(Run(len(runs) + 1, model, path, variant, gen, rep))
    return runs, skipped


@contextmanager
def model_lab(model: Model) -> Iterator[Any]:
    """The model's lab, up for the duration of the block; removed afterwards only if built here."""
    topo, created = realize.up(model.cni, model.mode)
    try:
        yield topo
    finally:
        if created:
            cleanup.teardown()


def hop_table(trace_result: Any, out_dir: Path) -> pd.DataFrame | None:
    """Export the run's trace (snapshot, hops, summary) and return its hop table."""
    from cniprof.report.export import export

    paths = export(out_dir, trace_result.snapshot, cni=trace_result.model.cni, mode=trace_result.model.mode,
                   duration_s=trace_result.duration_s, probes=trace_result.probes, topology=trace_result.topology,
                   extra=trace_result.extra, nodestate=trace_result.nodestate)
    return pd.read_csv(paths["hops.csv"])


def execute(run: Run, topo: Any, scenario: Scenario, archive: RunArchive,
            setup_s: dict[str, float]) -> dict[str, float | None]:
    """One run: generator in the background, hop probe traced in the foreground, both recorded.

    setup_s: the trace set-up time last measured per model (updated here)."""
    from cniprof import trace

    a, b = trace.pick_pods(topo, run.path, None, None)
    lead = (setup_s.get(run.model.spec, DEFAULT_SETUP_S) + SETUP_MARGIN_S) if scenario.trace else 0.0
    startup = generators.STARTUP_S.get(run.generator.tool, 0.0)
    gen = generators.make(run.generator, a, b, scenario.duration_s + lead)
    hops = None
    measured: dict[str, float] = {}
    with tunings.applied(topo, run.variant.tunings) as changes, ExitStack() as stack:
        stack.callback(gen.stop)
        with tunings.pinned(run.variant.tunings.get("cpu_pinning")):
            gen.start()
        if scenario.trace:
            called = time.monotonic()

            def first_update(_snapshot: dict[str, Any], elapsed: float) -> None:
                measured.setdefault("setup_s", time.monotonic() - called - elapsed)

            opts = trace.TraceOptions(cni=run.model.spec, path=run.path, traffic="none",
                                      duration_s=scenario.duration_s + startup)
            result = trace.run(opts, on_update=first_update)
            hops = hop_table(result, archive.run_dir(run.run_id))
            if "setup_s" in measured:
                setup_s[run.model.spec] = measured["setup_s"]
        values = generators.metrics(run.generator.tool, gen.wait())
    primary, higher = generators.PRIMARY[run.generator.tool]
    rec = {**run.record(), "src": a.name, "dst": b.name, "dst_ip": b.ip, "generator_s": scenario.duration_s + lead,
           "trace_setup_s": round(measured["setup_s"], 3) if "setup_s" in measured else None,
           "tuning_changes": [f"{c.dev.netns}/{c.dev.name}: {c.what}" for c in changes]}
    archive.add(rec, values, primary, higher, hops)
    return values


def run_scenario(scenario: Scenario, out: Path, text: str,
                 progress: Callable[[Run | None, int, int], None] | None = None) -> RunArchive:
    """Every run of the scenario into the run directory out; a failed run is recorded and the study goes on."""
    models, skipped_models = resolve_models(scenario)
    runs, skipped_paths = plan(scenario, models)
    if not runs:
        raise CniprofError(f"{scenario.source}: no run to do on this machine ({len(skipped_models)} models skipped)")
    archive = RunArchive(out, {"name": scenario.name, "file": scenario.source, "text": text,
                               "repetitions": scenario.repetitions, "duration_s": scenario.duration_s,
                               "trace": scenario.trace, "planned_runs": len(runs)}, scenario.max_spread_pct)
    for s in skipped_models + skipped_paths:
        archive.skip(s)
    status = "interrupted"
    setup_s: dict[str, float] = {}
    try:
        done = 0
        for model in models:
            todo = [r for r in runs if r.model is model]
            if not todo:
                continue
            with model_lab(model) as topo:
                for run in todo:
                    if progress is not None:
                        progress(run, done, len(runs))
                    started = time.monotonic()
                    try:
                        execute(run, topo, scenario, archive, setup_s)
                    except tunings.RevertFailed:
                        raise  # the lab stays tuned: every later run would measure something else
                    except CniprofError as e:
                        log.warning("run %s failed: %s", run.run_id, e)
                        archive.fail({**run.record(), "seconds": round(time.monotonic() - started, 1)}, str(e))
                    done += 1
        if progress is not None:
            progress(None, done, len(runs))
        status = "complete" if not archive.meta["failed"] else "complete-with-failures"
    finally:
        archive.write(status)
    return archive
