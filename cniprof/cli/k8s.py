# SPDX-License-Identifier: Apache-2.0
"""cniprof k8s: the agent DaemonSet on a Kubernetes cluster.

  manifest   print the YAML (namespace, service account, RBAC roles for tracing users, the agent DaemonSet)
  deploy     apply it (server-side apply: create or update)
  undeploy   delete all of it

The agent containers only wait; `cniprof trace --k8s` starts a session in them through the API server's pod exec.
"""

from __future__ import annotations

import argparse
import sys

from cniprof.k8s import deploy, manifests
from cniprof.k8s.cluster import Cluster, DryRun, connect


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("k8s", help="deploy or remove the cniprof agents on a Kubernetes cluster",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="k8s_action", metavar="ACTION", required=True)
    for name, helptext in (("manifest", "print the manifests as YAML"), ("deploy", "apply the manifests"),
                           ("undeploy", "delete everything deploy created")):
        a = actions.add_parser(name, help=helptext)
        a.add_argument("--namespace", default=manifests.DEFAULT_NAMESPACE,
                       help=f"the agents' namespace (default {manifests.DEFAULT_NAMESPACE})")
        if name != "undeploy":
            a.add_argument("--image", default=manifests.DEFAULT_IMAGE,
                           help=f"the cniprof image (default {manifests.DEFAULT_IMAGE}; build it with the "
                                "Dockerfile and push it to a registry your nodes pull from)")
        if name != "manifest":
            a.add_argument("--kubeconfig", help="kubeconfig file (default $KUBECONFIG or ~/.kube/config)")
            a.add_argument("--context", help="kubeconfig context (default: the current one)")
            a.add_argument("--dry-run", action="store_true", help="print the API calls instead of making them")
        a.set_defaults(func=run)


def _cluster(args: argparse.Namespace) -> Cluster:
    if args.dry_run:
        return DryRun()
    return Cluster(connect(args.kubeconfig, args.context))


def run(args: argparse.Namespace) -> int:
    if args.k8s_action == "manifest":
        sys.stdout.write(manifests.to_yaml(manifests.objects(args.namespace, args.image)))
        return 0
    cluster = _cluster(args)
    say = (lambda _line: None) if args.dry_run else print
    if args.k8s_action == "deploy":
        deploy.deploy(cluster, args.namespace, args.image, say)
    else:
        deploy.undeploy(cluster, args.namespace, say)
    return 0
