# SPDX-License-Identifier: Apache-2.0
"""The cluster objects of cniprof's agents, as `kubernetes` client models: namespace, service account, RBAC for
the people who trace, and the DaemonSet that puts one waiting agent container on every amd64/arm64 Linux node.

The agent container opens no port and talks to no API: its service account has no token mounted and no role.
It only waits; a tracing session is a `cniprof agent` process started in it through the API server's pod exec
(JSON lines on the exec stream's stdin/stdout), so RBAC on `pods/exec` in the agents' namespace decides who may
profile. Every privilege below is the least the agent's work needs; PRIVILEGES says why, and the README's
"Cluster mode" section repeats it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import lazy_loader
import yaml

from cniprof import __version__

if TYPE_CHECKING:
    import kubernetes
else:  # imported on first use: `trace` without --k8s never waits for the kubernetes client (~0.5 s)
    kubernetes = lazy_loader.load("kubernetes")

DEFAULT_NAMESPACE = "cniprof"
DEFAULT_IMAGE = f"cniprof:{__version__}"
AGENT_NAME = "cniprof-agent"
TRACER_ROLE = "cniprof-tracer"  # Role (agents' namespace) and ClusterRole (pods anywhere) for the users
AGENT_CONTAINER = "agent"
AGENT_LABELS = {"app.kubernetes.io/name": AGENT_NAME, "app.kubernetes.io/part-of": "cniprof"}
ARCHITECTURES = ("amd64", "arm64")
# Where the node's own /proc appears inside the agent container (hostPath, read-only); the CNI configuration is
# mounted at its own paths, so detection (`--cni auto`) reads it as on the node.
HOST_PROC = "/host/proc"

# capability -> why the agent needs it (the README lists the same)
PRIVILEGES: dict[str, str] = {
    "BPF": "load the hop, CPU and netfilter BPF programs and create their maps (bpf(2))",
    "PERFMON": "attach tracepoint (tp_btf) and perf_event programs; read the kernel's stacks for CPU sampling",
    "NET_ADMIN": "attach BPF netfilter links and read qdisc/device state in the pods' namespaces",
    "SYS_ADMIN": "setns(2) into the node's pod network namespaces; bpf(2) on kernels older than 5.8 (no CAP_BPF)",
    "SYS_PTRACE": "open /proc/PID/ns/net of a pod's process when that process holds capabilities the agent "
                  "lacks (the kernel's ptrace access check on namespace files)",
    "hostPID": "see the pods' processes: pod UID -> a process of the pod (/proc/*/cgroup) -> /proc/PID/ns/net",
    "hostNetwork": "the agent's own namespace is the node's: the underlay, CNI devices and host veths are there",
    "/sys/kernel/btf": "BTF of the running kernel: CO-RE relocations of the prebuilt BPF objects",
    "/proc": f"the node's /proc at {HOST_PROC}: pod processes and their cgroups, unmasked by the runtime",
    "/run/netns": "network namespaces the runtime bind-mounts (containerd cni-*, CRI-O), followed as they appear",
    "/etc/cni/net.d, /run/flannel": "CNI detection (as `--cni auto`) reads them at the same paths",
}
CAPABILITIES = ("BPF", "PERFMON", "NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE")


@dataclass(frozen=True)
class HostMount:
    name: str
    host_path: str
    mount_path: str
    propagation: str | None = None  # HostToContainer: later mounts on the node show up in the container


HOST_MOUNTS = (
    HostMount("btf", "/sys/kernel/btf", "/sys/kernel/btf"),
    HostMount("proc", "/proc", HOST_PROC),
    HostMount("netns", "/run/netns", "/run/netns", propagation="HostToContainer"),
    HostMount("cni-conf", "/etc/cni/net.d", "/etc/cni/net.d"),
    HostMount("flannel-run", "/run/flannel", "/run/flannel"),
)


def _meta(name: str, namespace: str | None = None) -> kubernetes.client.V1ObjectMeta:
    return kubernetes.client.V1ObjectMeta(name=name, namespace=namespace, labels=dict(AGENT_LABELS))


def namespace(ns: str) -> kubernetes.client.V1Namespace:
    return kubernetes.client.V1Namespace(api_version="v1", kind="Namespace", metadata=_meta(ns))


def service_account(ns: str) -> kubernetes.client.V1ServiceAccount:
    """The agents' identity: no token (the agent never calls the API), bound to no role."""
    return kubernetes.client.V1ServiceAccount(api_version="v1", kind="ServiceAccount", metadata=_meta(AGENT_NAME, ns),
                                   automount_service_account_token=False)


def _rule(groups: list[str], resources: list[str], verbs: list[str]) -> kubernetes.client.V1PolicyRule:
    return kubernetes.client.V1PolicyRule(api_groups=groups, resources=resources, verbs=verbs)


def tracer_cluster_role() -> kubernetes.client.V1ClusterRole:
    """What `cniprof trace --k8s` needs cluster-wide: the traced pods (anywhere) and the nodes' kernels."""
    return kubernetes.client.V1ClusterRole(
        api_version="rbac.authorization.k8s.io/v1", kind="ClusterRole", metadata=_meta(TRACER_ROLE),
        rules=[_rule([""], ["pods"], ["get", "list"]),
               # generators: an ephemeral container in the traced pod shares its network namespace
               _rule([""], ["pods/ephemeralcontainers"], ["patch"]),
               _rule([""], ["pods/log"], ["get"]),
               # stop an ephemeral generator early (Ctrl-C): exec `kill` in it; websocket exec is a GET
               # (authorized as get before Kubernetes 1.35, as create from 1.35 on)
               _rule([""], ["pods/exec"], ["get", "create"]),
               _rule([""], ["nodes"], ["get", "list"])])


def tracer_role(ns: str) -> kubernetes.client.V1Role:
    """In the agents' namespace: exec into the agent pods (a tracing session), and the client/server pods of
    `--nodes A,B`, created there and deleted at the end."""
    return kubernetes.client.V1Role(
        api_version="rbac.authorization.k8s.io/v1", kind="Role", metadata=_meta(TRACER_ROLE, ns),
        rules=[_rule([""], ["pods"], ["get", "list", "create", "delete"]),
               _rule([""], ["pods/exec"], ["get", "create"]),
               _rule([""], ["pods/log"], ["get"])])


def daemon_set(ns: str, image: str) -> kubernetes.client.V1DaemonSet:
    mounts = [kubernetes.client.V1VolumeMount(name=m.name, mount_path=m.mount_path, read_only=True,
                                   mount_propagation=m.propagation) for m in HOST_MOUNTS]
    volumes = [kubernetes.client.V1Volume(name=m.name, host_path=kubernetes.client.V1HostPathVolumeSource(
        path=m.host_path, type="Directory" if m.name in ("btf", "proc") else "DirectoryOrCreate"))
        for m in HOST_MOUNTS]
    container = kubernetes.client.V1Container(
        name=AGENT_CONTAINER, image=image, image_pull_policy="IfNotPresent",
        # waits only; with hostPID this is not PID 1, so SIGTERM ends it at once. Sessions are exec'd processes.
        command=["sleep", "infinity"],
        env=[kubernetes.client.V1EnvVar(name="CNIPROF_NODE", value_from=kubernetes.client.V1EnvVarSource(
            field_ref=kubernetes.client.V1ObjectFieldSelector(field_path="spec.nodeName")))],
        security_context=kubernetes.client.V1SecurityContext(
            # allowPrivilegeEscalation stays unset: the API refuses false together with CAP_SYS_ADMIN
            privileged=False, read_only_root_filesystem=True,
            run_as_user=0, run_as_non_root=False,
            capabilities=kubernetes.client.V1Capabilities(add=list(CAPABILITIES), drop=["ALL"]),
            seccomp_profile=kubernetes.client.V1SeccompProfile(type="RuntimeDefault")),
        resources=kubernetes.client.V1ResourceRequirements(requests={"cpu": "10m", "memory": "64Mi"},
                                                limits={"memory": "1Gi"}),  # BPF maps are charged here
        volume_mounts=mounts + [kubernetes.client.V1VolumeMount(name="tmp", mount_path="/tmp")])
    affinity = kubernetes.client.V1Affinity(node_affinity=kubernetes.client.V1NodeAffinity(
        required_during_scheduling_ignored_during_execution=kubernetes.client.V1NodeSelector(node_selector_terms=[
            kubernetes.client.V1NodeSelectorTerm(match_expressions=[
                kubernetes.client.V1NodeSelectorRequirement(key="kubernetes.io/os", operator="In", values=["linux"]),
                kubernetes.client.V1NodeSelectorRequirement(key="kubernetes.io/arch", operator="In",
                                                 values=list(ARCHITECTURES))])])))
    pod = kubernetes.client.V1PodSpec(
        service_account_name=AGENT_NAME, automount_service_account_token=False,
        host_pid=True, host_network=True, dns_policy="ClusterFirstWithHostNet",
        affinity=affinity, tolerations=[kubernetes.client.V1Toleration(operator="Exists")],  # every node, control plane too
        termination_grace_period_seconds=5, containers=[container],
        volumes=volumes + [kubernetes.client.V1Volume(name="tmp", empty_dir=kubernetes.client.V1EmptyDirVolumeSource())])
    return kubernetes.client.V1DaemonSet(
        api_version="apps/v1", kind="DaemonSet", metadata=_meta(AGENT_NAME, ns),
        spec=kubernetes.client.V1DaemonSetSpec(
            selector=kubernetes.client.V1LabelSelector(match_labels=dict(AGENT_LABELS)),
            update_strategy=kubernetes.client.V1DaemonSetUpdateStrategy(type="RollingUpdate"),
            template=kubernetes.client.V1PodTemplateSpec(metadata=kubernetes.client.V1ObjectMeta(labels=dict(AGENT_LABELS)),
                                              spec=pod)))


def objects(ns: str = DEFAULT_NAMESPACE, image: str = DEFAULT_IMAGE) -> list[Any]:
    """Every object of a deployment, in the order they are applied (undeploy goes in reverse)."""
    return [namespace(ns), service_account(ns), tracer_cluster_role(), tracer_role(ns), daemon_set(ns, image)]


def to_dict(obj: Any) -> dict[str, Any]:
    """The JSON form the API server receives (camelCase keys, no nulls)."""
    return kubernetes.client.ApiClient().sanitize_for_serialization(obj)


def to_yaml(objs: list[Any]) -> str:
    return yaml.safe_dump_all([to_dict(o) for o in objs], sort_keys=False)
