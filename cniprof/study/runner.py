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

A variant's consecutive runs (all generators and repetitions of one model, path and variant) share what is
costly or machine-wide to set up (`variant_setup`): the kube-proxy service (pod-to-service path or the `services`
tuning: 10 000 dummy services take seconds to install) and the machine-wide sysctls (`host_changes`). Both are
installed before the first of those runs and removed after the last one, also on an error or Ctrl-C; a removal
that fails stops the study like a tuning that cannot be reverted.
"""

from __future__ import annotations

import itertools
import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lazy_loader

from cniprof.analysis.record import TraceRecord, analyze_record
from cniprof.cni import registry
from cniprof.cni.model import Model
from cniprof.errors import CniprofError, EnvironmentProblem
from cniprof.lab import cleanup, host_sysctl, kernel, kubeproxy, realize, saved, tunings
from cniprof.report.export import export_trace
from cniprof.run import generators, inject, pod_to_service, trace
from cniprof.run.generators import GeneratorSpec
from cniprof.study.archive import RunArchive
from cniprof.study.scenario import SERVICE_PATH, Scenario, Variant

if TYPE_CHECKING:
    import pandas as pd
else:  # imported on first use: a command that does not need it does not wait for it
    pd = lazy_loader.load("pandas")

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
            if path == SERVICE_PATH and model.no_services:
                skipped.append({"model": model.spec, "path": path, "reason": model.no_services})
                continue
            if path == SERVICE_PATH and "cross-node" not in model.paths:
                skipped.append({"model": model.spec, "path": path, "reason": f"{model.spec} has no cross-node path, "
                                f"which {SERVICE_PATH} follows"})
                continue
            if path not in (*model.paths, SERVICE_PATH):
                skipped.append({"model": model.spec, "path": path, "reason": f"{model.spec} has no {path} path"})
                continue
            for variant in scenario.variants:
                if "services" in variant.tunings and model.no_services:
                    skipped.append({"model": model.spec, "path": path, "variant": variant.name,
                                    "reason": f"tuning services: {model.no_services}"})
                    continue
                for gen in scenario.generators:
                    for rep in range(1, scenario.repetitions + 1):
                        runs.append(Run(len(runs) + 1, model, path, variant, gen, rep))
    return runs, skipped


@contextmanager
def model_lab(model: Model) -> Iterator[Any]:
    """The model's lab, up (and this study's alone) for the duration of the block; removed afterwards only if
    built here."""
    with saved.in_use(f"cniprof run ({model.spec})"):
        topo, created = realize.up(model.cni, model.mode)
        try:
            yield topo
        finally:
            if created:
                cleanup.teardown()


@dataclass
class VariantSetup:
    """What variant_setup installed for a variant's runs."""

    service: kubeproxy.Applied | None = None
    host_sysctls: dict[str, str] = field(default_factory=dict)  # machine-wide key -> old value (restored after)


def host_values(tunings_: dict[str, Any]) -> dict[str, str]:
    """The machine-wide sysctls a variant sets (rfs: N -> net.core.rps_sock_flow_entries=N)."""
    out = {k: str(v) for k, v in (tunings_.get("sysctl") or {}).items() if k in tunings.HOST_SYSCTLS}
    if "rfs" in tunings_:
        out["net.core.rps_sock_flow_entries"] = str(tunings_["rfs"])
    return out


def service_ports(scenario: Scenario) -> list[tuple[int, str]]:
    return list(dict.fromkeys(p for g in scenario.generators for p in generators.service_ports(g)))


def _revert_or_stop(undo: ExitStack) -> None:
    try:
        undo.close()
    except CniprofError as e:
        raise tunings.RevertFailed(f"could not undo the variant's set-up (run `cniprof lab down`): {e}") from None


@contextmanager
def variant_setup(topo: Any, model: Model, scenario: Scenario, path: str, variant: Variant) -> Iterator[VariantSetup]:
    """Machine-wide sysctls and the kube-proxy service for a variant's consecutive runs; removed afterwards."""

    setup = VariantSetup()
    with ExitStack() as stack:
        undo = ExitStack()
        stack.callback(_revert_or_stop, undo)
        host = host_values(variant.tunings)
        if host:
            setup.host_sysctls = undo.enter_context(host_sysctl.applied(host))
        spec = variant.tunings.get("services")
        if path == SERVICE_PATH or spec is not None:
            if model.no_services:
                raise CniprofError(f"kube-proxy services on {model.spec}: {model.no_services}")
            _, b = trace.pick_pods(topo, path, None, None)
            target = b if b in topo.pods else kubeproxy.default_target(topo)
            spec = spec or {"count": 0, "mode": "iptables"}
            setup.service = pod_to_service.install_service(undo, topo, target, spec["count"], service_ports(scenario),
                                                           spec["mode"])
        yield setup


def hop_table(record: TraceRecord, out_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Export the run's trace (the same files `cniprof trace --export` writes) and return its hop and CPU tables."""
    analysis = analyze_record(record)
    export_trace(out_dir, record, analysis)
    return analysis.tables.hops, cpu_rows(analysis.cpu) if analysis.cpu is not None else None


CPU_COLUMNS = ["kind", "component", "cpu", "cpu_ms", "share_pct", "us_per_pkt", "net_rx_pct", "net_tx_pct",
               "busy_pct"]


def cpu_rows(cpu: Any) -> pd.DataFrame:
    """A run's CPU table: one row per component (share of busy CPU, µs per packet) and one per CPU (softirq %)."""
    comps = cpu.components.assign(kind="component", cpu=None)
    sirq = cpu.softirq.assign(kind="softirq", component=None)
    return pd.concat([comps, sirq], ignore_index=True).reindex(columns=CPU_COLUMNS)


OnSnapshot = Callable[["Run", dict[str, Any], float, float], None]  # run, hop snapshot, elapsed s, total s


def execute(run: Run, topo: Any, scenario: Scenario, archive: RunArchive,
            setup_s: dict[str, float], variant: VariantSetup | None = None,
            on_snapshot: OnSnapshot | None = None) -> dict[str, float | None]:
    """One run: generator in the background, hop probe traced in the foreground, both recorded.

    setup_s: the trace set-up time last measured per model (updated here). variant: what variant_setup installed
    (the service a pod-to-service run sends to)."""

    variant = variant or VariantSetup()
    a, b = trace.pick_pods(topo, run.path, None, None)
    lead = (setup_s.get(run.model.spec, DEFAULT_SETUP_S) + SETUP_MARGIN_S) if scenario.trace else 0.0
    startup = generators.STARTUP_S.get(run.generator.tool, 0.0)
    to_service = run.path == SERVICE_PATH
    if to_service and variant.service is None:
        raise CniprofError(f"{run.run_id}: no kube-proxy service installed for {SERVICE_PATH}")
    gen = generators.make(run.generator, a, b, scenario.duration_s + lead,
                          dst_ip=variant.service.cluster_ip if to_service else None)
    hops = cpu = None
    measured: dict[str, float] = {}
    with tunings.applied(topo, run.variant.tunings) as changes, ExitStack() as stack:
        stack.callback(gen.stop)
        with tunings.pinned(run.variant.tunings.get("cpu_pinning") or inject.pinned_cpus(topo)):
            gen.start()
        if scenario.trace:
            called = time.monotonic()

            def first_update(snapshot: dict[str, Any], elapsed: float) -> None:
                measured.setdefault("setup_s", time.monotonic() - called - elapsed)
                if on_snapshot is not None:  # the live view of the run
                    on_snapshot(run, snapshot, elapsed, scenario.duration_s + startup)

            opts = trace.TraceOptions(cni=run.model.spec, path=run.path, traffic="none",
                                      duration_s=scenario.duration_s + startup, cpu=scenario.cpu,
                                      service=variant.service if to_service else None)
            result = trace.run(opts, on_update=first_update)
            hops, cpu = hop_table(result.record, archive.run_dir(run.run_id))
            if "setup_s" in measured:
                setup_s[run.model.spec] = measured["setup_s"]
        values = generators.metrics(run.generator.tool, gen.wait())
    primary, higher = generators.PRIMARY[run.generator.tool]
    rec = {**run.record(), "src": a.name, "dst": b.name, "dst_ip": variant.service.cluster_ip if to_service else b.ip, "generator_s": scenario.duration_s + lead,
           "trace_setup_s": round(measured["setup_s"], 3) if "setup_s" in measured else None,
           "tuning_changes": [f"{c.dev.netns}/{c.dev.name}: {c.what}" for c in changes],
           "host_sysctls": {k: {"old": old, "new": host_values(run.variant.tunings)[k]}
                            for k, old in variant.host_sysctls.items()}}
    if variant.service is not None:
        svc = variant.service
        rec["service"] = pod_to_service.describe(svc, b if to_service else kubeproxy.default_target(topo))
        rec["kube_proxy_rules_per_node"] = svc.rules_read  # read back from each node after the install
    archive.add(rec, values, primary, higher, hops, cpu)
    return values


def _one(run: Run, topo: Any, scenario: Scenario, archive: RunArchive, setup_s: dict[str, float],
         setup: VariantSetup, on_snapshot: OnSnapshot | None = None) -> None:
    """One run; a failure is recorded and the study goes on (unless a tuning could not be reverted)."""
    started = time.monotonic()
    try:
        execute(run, topo, scenario, archive, setup_s, setup, on_snapshot)
    except tunings.RevertFailed:
        raise
    except CniprofError as e:
        log.warning("run %s failed: %s", run.run_id, e)
        archive.fail({**run.record(), "seconds": round(time.monotonic() - started, 1)}, str(e))


def preflight(scenario: Scenario) -> None:
    """What would fail every run, found before any lab is built: a missing generator program is one line now,
    not one failure per run."""
    generators.require_programs(scenario.generators)


def run_scenario(scenario: Scenario, out: Path, text: str,
                 progress: Callable[[Run | None, int, int], None] | None = None,
                 on_snapshot: OnSnapshot | None = None) -> RunArchive:
    """Every run of the scenario into the run directory out; a failed run is recorded and the study goes on.

    progress(run, done, total) before each run; on_snapshot(run, hop snapshot, elapsed, total) during a traced
    run, about once a second (the live view)."""
    models, skipped_models = resolve_models(scenario)
    runs, skipped_paths = plan(scenario, models)
    if not runs:
        raise CniprofError(f"{scenario.source}: no run to do on this machine ({len(skipped_models)} models skipped)")
    preflight(scenario)
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
                for _, group in itertools.groupby(todo, key=lambda r: (r.path, r.variant.name)):
                    group = list(group)
                    left = list(group)
                    try:
                        with variant_setup(topo, model, scenario, group[0].path, group[0].variant) as setup:
                            while left:
                                run = left.pop(0)
                                if progress is not None:
                                    progress(run, done, len(runs))
                                _one(run, topo, scenario, archive, setup_s, setup, on_snapshot)
                                done += 1
                    except tunings.RevertFailed:
                        raise  # the lab stays tuned: every later run would measure something else
                    except CniprofError as e:  # the variant's set-up failed: none of its runs can be done
                        log.warning("variant %s set-up failed: %s", group[0].variant.name, e)
                        for run in left:
                            archive.fail({**run.record(), "seconds": 0.0}, f"variant set-up: {e}")
                            done += 1
        if progress is not None:
            progress(None, done, len(runs))
        status = "complete" if not archive.meta["failed"] else "complete-with-failures"
    finally:
        archive.write(status)
    return archive
