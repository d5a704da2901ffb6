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

from cniprof.errors import EnvironmentProblem, UsageError
from cniprof.k8s import manifests
from cniprof.k8s.cluster import DryRun
from cniprof.k8s.session import ClusterOptions, ClusterRun

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


def dry_run(opts: ClusterOptions) -> int:
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
    return 0


def run(args: argparse.Namespace) -> int:
    opts = options(args)
    if args.dry_run:
        return dry_run(opts)
    raise EnvironmentProblem("cniprof trace --k8s needs the node agents' coordinator (issue 12), which this build "
                             "does not have yet; --dry-run shows every API call such a run makes")
