# SPDX-License-Identifier: Apache-2.0
"""`trace --k8s`: one traced run on a cluster. The API side (session.py) finds the pods and nodes, asks the
nodes for the pods' namespaces and their CNI, opens the agent sessions and runs the generators; the node agents'
coordinator (run/coordinator.py) drives the sessions through their channels and merges the nodes' snapshots
(the wire hop timed across the two clocks). The result is an ordinary TraceRecord: the same tables, exports,
path check and findings as a lab run, rows named by the nodes and NS/POD, plus the cluster facts."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from cniprof.analysis.record import TraceRecord
from cniprof.cni import registry
from cniprof.cni.topology import Pod
from cniprof.errors import UsageError
from cniprof.interrupts import sigterm_interrupts
from cniprof.k8s.cluster import Cluster
from cniprof.k8s.session import ClusterOptions, ClusterRun
from cniprof.probes.hops_abi import ATTACH_POINT
from cniprof.probes.plan import DEFAULT_EVENTS
from cniprof.probes.sampling import CALIBRATION_S, choose_sample_every
from cniprof.run import coordinator

INTERVAL_S = 1.0  # one snapshot round a second (each is a command on every session)


@dataclass(frozen=True)
class _Forward:
    """What the coordinator reads of the single tracer's plan directions: direction 0's destination address."""

    dir: int
    dst_ip: str


def trace(cluster: Cluster, opts: ClusterOptions, *, sample_every: int = 0, agent_topology: str = "live",
          command: str | None = None,
          on_update: Callable[[dict[str, Any], float], None] | None = None) -> TraceRecord:
    """Trace once; the record carries the cluster facts (summary.json's `cluster` block)."""
    with sigterm_interrupts(), ExitStack() as stack:
        run = ClusterRun(cluster, opts, stack)
        facts = run.resolve()
        assert facts.src is not None and facts.dst is not None
        if facts.src.node == facts.dst.node:
            raise UsageError(f"{facts.src.ref} and {facts.dst.ref} are both on node {facts.src.node}: cluster mode "
                             "traces pods on two nodes (node agents time the hop between them)")
        run.pod_namespaces()
        run.detect_cni()
        model = registry.parse(run.cni_spec())
        chain = model.chain("cross-node")
        channels = run.open_agents()
        pods = [Pod(name=p.ref, node=p.node, netns=facts.pod_netns[p.ref], ip=p.ip, host_veth="", devices=())
                for p in (facts.src, facts.dst)]
        probe = coordinator.for_pair(pods[0], pods[1], chain, (_Forward(0, facts.dst.ip),), cni=model.spec,
                                     path="cross-node", events=DEFAULT_EVENTS, sample_every=sample_every or 1,
                                     topology=agent_topology, channel=lambda node: channels[node])
        stack.callback(probe.close)
        probe.start()
        run.start_traffic()
        t0 = time.monotonic()
        sampling: dict[str, Any] = {"mode": "fixed" if sample_every else "auto", "every": probe.sample_every}
        if not sample_every:
            time.sleep(min(CALIBRATION_S, opts.duration_s / 4))
            n = choose_sample_every(probe.counter("candidates"), time.monotonic() - t0, probe.tracked_budget_per_s)
            sampling.update(every=n, calibration_s=round(time.monotonic() - t0, 3))
            if n > 1:
                probe.set_sample_every(n)
                probe.reset_stats()
        while time.monotonic() - t0 < opts.duration_s:
            time.sleep(min(INTERVAL_S, max(0.0, opts.duration_s - (time.monotonic() - t0))))
            if on_update is not None:
                on_update(probe.snapshot(), time.monotonic() - t0)
        traffic = run.traffic_result()
        time.sleep(0.2)  # the last packets reach their final points
        snapshot = probe.snapshot()
        kernels = sorted({n.kernel for n in facts.nodes.values()})
        arches = sorted({n.arch for n in facts.nodes.values()})
        record = TraceRecord(
            cni=model.cni, mode=model.mode, path="cross-node", snapshot=snapshot,
            duration_s=time.monotonic() - t0, traffic={"tool": opts.traffic, **traffic} if traffic else {},
            probes=tuple(ATTACH_POINT.get(p, p) for p in probe.attached), sampling=sampling,
            where=f"cluster {cluster.server} (server {facts.server_version.get('git_version')})",
            command=command, kernel=", ".join(kernels), arch=", ".join(arches), cluster=facts.summary())
        return record
