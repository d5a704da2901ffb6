# SPDX-License-Identifier: Apache-2.0
"""Pods by name, the nodes they run on, and the cniprof agent pod on each node, as the API server reports them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubernetes import client

from cniprof.errors import EnvironmentProblem, UsageError
from cniprof.k8s import manifests
from cniprof.k8s.cluster import ApiRefused, Cluster

AGENT_SELECTOR = ",".join(f"{k}={v}" for k, v in manifests.AGENT_LABELS.items())
# a static pod (a manifest file on the node) is shown by the API as a mirror pod with a UID of its own; the
# kubelet's cgroups carry the pod's config hash, which the mirror pod keeps in this annotation
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"


@dataclass(frozen=True)
class PodInfo:
    namespace: str
    name: str
    node: str
    ip: str
    uid: str  # as the node knows it: metadata.uid, or a static pod's config hash
    containers: tuple[str, ...]
    host_network: bool

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    def to_dict(self) -> dict[str, Any]:
        return {"pod": self.ref, "node": self.node, "ip": self.ip, "uid": self.uid,
                "containers": list(self.containers), "host_network": self.host_network}


@dataclass(frozen=True)
class NodeInfo:
    name: str
    kernel: str
    arch: str
    agent_pod: str  # the agent pod's name (in the agents' namespace)

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.name, "kernel": self.kernel, "arch": self.arch, "agent_pod": self.agent_pod}


def parse_ref(text: str) -> tuple[str, str]:
    """NS/POD -> (namespace, name); a bare POD is in namespace default."""
    ns, _, name = text.rpartition("/")
    if not name or "/" in ns:
        raise UsageError(f"pod {text!r}: give NAMESPACE/POD (or POD for namespace default)")
    return (ns or "default"), name


def pod_info(pod: client.V1Pod) -> PodInfo:
    meta, spec, status = pod.metadata, pod.spec, pod.status
    ref = f"{meta.namespace}/{meta.name}"
    phase = status.phase if status else None
    if phase != "Running" or not spec.node_name or not status.pod_ip:
        raise UsageError(f"pod {ref} is {phase or 'not scheduled'} (no node or IP yet): trace a Running pod")
    uid = (meta.annotations or {}).get(MIRROR_ANNOTATION) or meta.uid  # the UID the node's cgroups carry
    return PodInfo(meta.namespace, meta.name, spec.node_name, status.pod_ip, uid,
                   tuple(c.name for c in spec.containers or ()), bool(spec.host_network))


def resolve_pod(cluster: Cluster, ref: str) -> PodInfo:
    ns, name = parse_ref(ref)
    try:
        return pod_info(cluster.read_pod(ns, name))
    except ApiRefused as e:
        if e.status == 404:
            raise UsageError(f"no pod {ns}/{name} (kubectl get pod -n {ns} {name}): give NAMESPACE/POD") from None
        raise


def agent_pod(cluster: Cluster, namespace: str, node: str) -> str:
    """The Running cniprof agent pod on a node; a node without one is an environment problem with the fix."""
    pods = [p for p in cluster.pods_on_node(namespace, AGENT_SELECTOR, node)
            if p.status is not None and p.status.phase == "Running" and p.metadata.deletion_timestamp is None]
    if not pods:
        raise EnvironmentProblem(
            f"no running cniprof agent pod on node {node} (namespace {namespace}): deploy the agents with "
            f"`cniprof k8s deploy --namespace {namespace}`, or check that the node is Linux amd64/arm64 and "
            f"`kubectl -n {namespace} get pods -o wide` shows its agent Running")
    return str(min(p.metadata.name for p in pods))


def node_info(cluster: Cluster, namespace: str, node: str) -> NodeInfo:
    info = cluster.read_node(node).status.node_info
    return NodeInfo(node, info.kernel_version, info.architecture, agent_pod(cluster, namespace, node))
