# SPDX-License-Identifier: Apache-2.0
"""The single tracer and per-node agents on the same packets: both attached at once to one lab, one generator.

Used by tests/root/test_agents.py and by tests/unit/data/record_agents.py (which saves a run for the pure tests).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cniprof.analysis import clock
from cniprof.bpf.build import object_path
from cniprof.cni import registry
from cniprof.cni.topology import Pod, Topology
from cniprof.probes import plan as planning
from cniprof.probes.hops import HopProbe
from cniprof.run import coordinator, trace

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))  # the pure comparisons live with the unit tests
from agents_data import disagreements, hop_means, offset_error_ns, wire_keys

__all__ = ["Paired", "disagreements", "hop_means", "offset_error_ns", "paired", "wire_keys"]

SETTLE_S = 0.3  # the last packets reach their last point


@dataclass
class Paired:
    single: dict[str, Any]  # the single tracer's snapshot
    merged: dict[str, Any]  # the coordinator's merged snapshot (clock and agents blocks included)
    recording: dict[str, Any]  # what the agents sent, for tests/unit (see record_agents.py)


def paired(topo: Topology, spec: str, generator: Callable[[Pod, Pod], Any], *, path: str = "cross-node",
           offset_ns: int = 0, sample_every: int = 1, events: tuple[str, ...] = planning.DEFAULT_EVENTS,
           agents_first: bool = False) -> Paired:
    """agents_first: attach the agents' programs before the single tracer's (they then run first at every
    tracepoint; whichever runs second sees each point a program run later)."""
    model = registry.parse(spec)
    chain = trace.chain_for(model, path)
    a, b = trace.pick_pods(topo, path, None, None)
    plan = planning.build_plan(topo, chain, a, b, events=events)
    with ExitStack() as stack:
        single = HopProbe(object_path("hops"), plan.points, plan.expected, plan.directions, sample_every=sample_every)
        stack.callback(single.close)
        coord = coordinator.for_pair(a, b, chain, plan.directions, cni=model.spec, path=path, events=events,
                                     sample_every=sample_every, test_clock_offset_ns=offset_ns)
        stack.callback(coord.close)
        for probe in ((coord, single) if agents_first else (single, coord)):
            probe.start()
        gen = generator(a, b)
        stack.callback(gen.stop)
        gen.start()
        gen.wait()
        time.sleep(SETTLE_S)
        merged = coord.snapshot()
        single_snap = single.snapshot()
        recording = {
            "spec": spec, "path": path, "offset_ns": offset_ns, "events": list(events),
            "crossings": [vars(c) for c in coord.crossings],
            "wire": {str(d): vars(w) for d, w in coord.wire.items()},
            "labels": {str(d): label for d, label in coord.labels.items()},
            "nodes": {n: {"snapshot": st.snapshot, "records": clock.encode(recs.tobytes())}
                      for (n, st), recs in zip(coord.agents.items(), coord.records().values())},
            "single": single_snap,
        }
    return Paired(single_snap, merged, recording)
