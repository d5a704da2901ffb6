# SPDX-License-Identifier: Apache-2.0
"""`cniprof k8s deploy` / `undeploy`: the manifests applied (server-side apply, idempotent) or removed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cniprof.k8s import manifests
from cniprof.k8s.cluster import Cluster


def deploy(cluster: Cluster, namespace: str, image: str, say: Callable[[str], None] = print) -> list[Any]:
    objs = manifests.objects(namespace, image)
    for obj in objs:
        cluster.apply(obj)
        say(f"applied {obj.kind} {_name(obj)}")
    return objs


def undeploy(cluster: Cluster, namespace: str, say: Callable[[str], None] = print) -> dict[str, bool]:
    """Delete every object deploy creates, the DaemonSet first and the namespace last; an object already gone
    is reported, not an error. Deleting the namespace also removes pods left by an interrupted `--nodes` run."""
    removed: dict[str, bool] = {}
    for obj in reversed(manifests.objects(namespace)):
        gone = cluster.delete(obj.kind, obj.metadata.name, obj.metadata.namespace)
        removed[f"{obj.kind} {_name(obj)}"] = gone
        say(f"{'deleted' if gone else 'already absent:'} {obj.kind} {_name(obj)}")
    return removed


def _name(obj: Any) -> str:
    ns = obj.metadata.namespace
    return f"{ns}/{obj.metadata.name}" if ns else obj.metadata.name
