# SPDX-License-Identifier: Apache-2.0
"""Run one tuning's pairs on the lab: for each pair a baseline run and a tuned run (ABBA order, cniprof.analysis.paired),
the tuning applied for the tuned run only and reverted right after it (tunings.applied), so the lab is exactly as
it was between runs, at the end, and after Ctrl-C (the context managers unwind on KeyboardInterrupt).

The generators and the pod pair are the study's and the tracer's (generators.make, trace.pick_pods); an injected
softirq-one-cpu pinning applies to every run except the tuned runs of a tuning that unpins.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from cniprof.analysis import paired
from cniprof.cni.topology import Pod, Topology
from cniprof.errors import CniprofError, UsageError
from cniprof.lab import tunings
from cniprof.run import generators, inject
from cniprof.run.generators import GeneratorSpec
from cniprof.tune.tunes import Tune

log = logging.getLogger(__name__)
RETRIES = 1  # a run whose generator failed (e.g. a port still in TIME_WAIT) is tried once more


@dataclass
class Record:
    """One run: what the generator printed (its metrics), in which pair and arm."""

    tuning: str
    generator: str
    tool: str
    metric: str
    higher_is_better: bool
    pair: int
    arm: str
    position: int  # 0: ran first in its pair
    values: dict[str, float | None] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        return {"tuning": self.tuning, "generator": self.generator, "tool": self.tool, "metric": self.metric,
                "higher_is_better": self.higher_is_better, "pair": self.pair, "arm": self.arm,
                "position": self.position, **self.values}


@dataclass(frozen=True)
class Plan:
    """What the tuned runs change: the bench tuning spec and the pinning (baseline and tuned)."""

    spec: dict[str, Any]
    changes: list[str]
    base_pin: str | None
    tuned_pin: str | None


def plan(topo: Topology, tune: Tune) -> Plan:
    """The tuning's effect on this lab; UsageError when it would change nothing (so there is nothing to measure)."""
    assert tune.spec is not None
    spec = tune.spec(topo)
    base_pin = inject.pinned_cpus(topo)
    tuned_pin = None if tune.unpin else base_pin
    changes = [f"{c.dev.netns}/{c.dev.name}: {c.what}" for c in tunings.plan(topo, spec)] if spec else []
    if base_pin != tuned_pin:
        changes.append(f"generators: CPU {base_pin} -> all CPUs")
    if not changes:
        why = "the generators are not pinned (inject softirq-one-cpu first)" if tune.unpin else \
            "every setting it makes is already in place"
        raise UsageError(f"{tune.name} changes nothing on this {topo.cni}/{topo.mode} lab: {why}")
    return Plan(spec, changes, base_pin, tuned_pin)


def one_run(topo: Topology, a: Pod, b: Pod, gen: GeneratorSpec, duration_s: float, spec: dict[str, Any],
            pin: str | None, dst_ip: str | None = None) -> dict[str, float | None]:
    """One generator run with spec applied (reverted before returning); the generator's metrics."""
    for attempt in range(RETRIES + 1):
        generator = generators.make(gen, a, b, duration_s, dst_ip)
        try:
            with tunings.applied(topo, spec), ExitStack() as stack:
                stack.callback(generator.stop)
                with tunings.pinned(pin):
                    generator.start()
                return generators.metrics(gen.tool, generator.wait())
        except tunings.RevertFailed:
            raise
        except CniprofError as e:
            if attempt == RETRIES:
                raise
            log.warning("%s run failed (%s); trying once more", gen.name, e)
    raise AssertionError("unreachable")


def measure(topo: Topology, tune: Tune, gen: GeneratorSpec, a: Pod, b: Pod, n_pairs: int, duration_s: float,
            on_run: Callable[[int, str], None] | None = None,
            dst_ip: str | None = None) -> tuple[Plan, list[Record]]:
    """n_pairs pairs of (baseline, tuned) runs in ABBA order; every run's record."""
    p = plan(topo, tune)
    metric, higher = generators.PRIMARY[gen.tool]
    records: list[Record] = []
    for pair in range(n_pairs):
        for position, arm in enumerate(paired.order(pair)):
            if on_run is not None:
                on_run(pair, arm)
            tuned = arm == paired.TUNED
            values = one_run(topo, a, b, gen, duration_s, p.spec if tuned else {},
                             p.tuned_pin if tuned else p.base_pin, dst_ip)
            records.append(Record(tune.name, gen.name, gen.tool, metric, higher, pair + 1, arm, position, values))
    return p, records
