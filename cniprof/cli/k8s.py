# SPDX-License-Identifier: Apache-2.0
"""cniprof k8s: the agent DaemonSet on a Kubernetes cluster.

  manifest   print the YAML (namespace, service account, RBAC roles for tracing users, the agent DaemonSet)
  deploy     apply it (server-side apply: create or update)
  undeploy   delete all of it
  pod-netns  (on a node, in the agent container) pod UIDs -> their network namespaces, as JSON lines
  detect     (on a node) the node's CNI as `trace --cni auto` detects it, as JSON

The agent containers only wait; `cniprof trace --k8s` starts a session in them through the API server's pod exec.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cniprof.cli import commands
from cniprof.k8s import deploy, manifests
from cniprof.k8s.cluster import Cluster, DryRun, connect
from cniprof.node import detect, pods


def register(sub: argparse._SubParsersAction) -> None:
    p = commands.add(sub, "k8s", __doc__)
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
            a.add_argument("--kubeconfig", type=commands.path, help="kubeconfig file (default $KUBECONFIG or ~/.kube/config)")
            a.add_argument("--context", help="kubeconfig context (default: the current one)")
            a.add_argument("--dry-run", action="store_true", help="print the API calls instead of making them")
        a.set_defaults(func=run)
    a = actions.add_parser("pod-netns", help="on a node: the network namespace of each pod UID (JSON lines)")
    a.add_argument("uids", nargs="+", metavar="UID", help="pod UIDs (metadata.uid)")
    a.add_argument("--proc", type=commands.path, default=None,
                   help=f"the node's /proc (default {manifests.HOST_PROC} when it exists, else /proc)")
    a.set_defaults(func=run)
    a = actions.add_parser("detect", help="on a node: its CNI, as --cni auto detects it (JSON)")
    a.add_argument("--root", type=commands.path, default=Path("/"), help="the node's root for etc/cni/net.d (default /)")
    a.add_argument("--netns", help="the node's network namespace (default: the one this runs in)")
    a.set_defaults(func=run)


def _cluster(args: argparse.Namespace) -> Cluster:
    if args.dry_run:
        return DryRun()
    return Cluster(connect(str(args.kubeconfig) if args.kubeconfig else None, args.context))


def run(args: argparse.Namespace) -> int:
    if args.k8s_action == "pod-netns":
        proc = args.proc or (Path(manifests.HOST_PROC) if Path(manifests.HOST_PROC).is_dir() else Path("/proc"))
        found = [pods.pod_netns(uid, proc) for uid in args.uids]  # all or nothing: an error is one line
        for f in found:
            print(json.dumps({"uid": f.uid, "pid": f.pid, "netns": f.path, "inode": f.inode,
                              "processes": f.processes}), flush=True)
        return 0
    if args.k8s_action == "detect":
        print(json.dumps(detect.detect(args.root, args.netns).to_dict()), flush=True)
        return 0
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
