# SPDX-License-Identifier: Apache-2.0
"""cniprof trace --k8s: the pods of a Kubernetes cluster, traced by the node agents of their nodes.

The API side (cniprof/k8s/session.py) resolves the pods and nodes, asks each node for its pods' namespaces and
its CNI, opens one agent session per node through pod exec, and runs the generators as ephemeral containers; the
coordinator of the node agents (issue 12) drives the sessions and merges them. `--dry-run` prints every API call
of such a run, in order, with placeholders for what only the cluster can answer, and sends nothing.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from typing import Any

from cniprof.analysis.record import TraceRecord
from cniprof.analysis.summary import analyze
from cniprof.errors import UsageError
from cniprof.k8s import manifests
from cniprof.k8s import trace as k8s_trace
from cniprof.k8s.cluster import Cluster, DryRun, connect
from cniprof.k8s.session import ClusterOptions, ClusterRun
from cniprof.ui.console import wide_console
from cniprof.ui.live import LiveView

SESSION_NOTE = ("# on each agent session, JSON lines of the agent protocol: start {spec}, snapshot every "
                "second, stop; no API call")


def options(args: argparse.Namespace) -> ClusterOptions:
    if not args.k8s:
        raise UsageError("--dry-run and --nodes belong to cluster mode: add --k8s")
    nodes = None
    if args.nodes:
        parts = [n.strip() for n in args.nodes.split(",")]
        if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
            raise UsageError(f"--nodes takes two different node names A,B, not {args.nodes!r}")
        nodes = (parts[0], parts[1])
    return ClusterOptions(src=args.src, dst=args.dst, nodes=nodes, traffic=args.traffic, duration_s=args.duration,
                          count=args.count, namespace=args.namespace or manifests.DEFAULT_NAMESPACE,
                          image=args.image or manifests.DEFAULT_IMAGE)


def dry_run(opts: ClusterOptions) -> None:
    cluster = DryRun(out=sys.stdout)
    with ExitStack() as stack:
        run = ClusterRun(cluster, opts, stack)
        run.resolve()
        run.pod_namespaces()
        run.detect_cni()
        run.open_agents()
        print(SESSION_NOTE, flush=True)
        run.start_traffic()
        print(f"# traffic and tracing for {opts.duration_s:g} s", flush=True)
        run.traffic_result()
        print("# cleanup, in reverse order of creation:", flush=True)


def run(args: argparse.Namespace, sample_every: int, command: str | None = None) -> TraceRecord | None:
    """The traced record (None after a dry run, which only prints). sample_every: 0 = auto."""
    opts = options(args)
    if args.dry_run:
        dry_run(opts)
        return None
    cluster = Cluster(connect(args.kubeconfig, args.context))
    if args.no_ui:
        return k8s_trace.trace(cluster, opts, sample_every=sample_every, command=command)
    view = LiveView(f"cniprof · cluster · {opts.src or opts.nodes} → {opts.dst or ''} · {opts.traffic}",
                    total_s=opts.duration_s, console=wide_console())

    def on_update(snapshot: dict[str, Any], elapsed: float) -> None:
        view.update(analyze(snapshot), progress=(min(elapsed, opts.duration_s), opts.duration_s))

    with view:
        return k8s_trace.trace(cluster, opts, sample_every=sample_every, command=command, on_update=on_update)
