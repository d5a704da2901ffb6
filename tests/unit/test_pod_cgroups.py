# SPDX-License-Identifier: Apache-2.0
"""Pod UID from cgroup paths: every kubelet layout (cgroupfs/systemd drivers, QoS classes, containerd/CRI-O,
'_' in systemd unit names), and paths that are not a pod's. The same resolution is run for real, with real
cgroups and processes in lab namespaces, in tests/root/test_pod_netns.py."""

from __future__ import annotations

import pytest

from cniprof.errors import UsageError
from cniprof.node.pods import normalize_uid, pod_uid_in

UID = "3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
U_ = UID.replace("-", "_")
CID = "9d5b" * 16


@pytest.mark.parametrize("path", [
    f"/kubepods/pod{UID}/{CID}",                                                   # cgroupfs, Guaranteed
    f"/kubepods/burstable/pod{UID}/{CID}",                                         # cgroupfs, Burstable
    f"/kubepods/besteffort/pod{UID}/crio-{CID}",                                   # cgroupfs, CRI-O
    f"/kubepods.slice/kubepods-pod{U_}.slice/cri-containerd-{CID}.scope",          # systemd, Guaranteed
    f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{U_}.slice/cri-containerd-{CID}.scope",
    f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{U_}.slice/crio-{CID}.scope",
    f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{U_}.slice/crio-conmon-{CID}.scope",
    f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{U_}.slice",  # a process in the pod slice
    f"/kind-node/kubepods.slice/kubepods-pod{U_}.slice/cri-containerd-{CID}.scope",     # nested kubelet
    (f"/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/"      # --cgroup-root=/kubelet
     f"kubelet-kubepods-burstable-pod{U_}.slice/cri-containerd-{CID}.scope"),
    f"/nested/kubepods/burstable/pod{UID.upper()}/{CID}",
])
def test_pod_paths_name_the_uid(path: str) -> None:
    assert pod_uid_in(path) == UID


@pytest.mark.parametrize("path", [
    "/", "/system.slice/containerd.service", "/user.slice/user-0.slice/session-1.scope",
    f"/kubepods/burstable/{CID}",                      # a QoS cgroup itself, no pod
    "/kubepods.slice/kubepods-burstable.slice",
    f"/docker/pod{UID}",                               # not under kubepods
    "/kubepods/burstable/podnotauid/x",
])
def test_other_paths_name_no_pod(path: str) -> None:
    assert pod_uid_in(path) is None


def test_normalize_uid() -> None:
    assert normalize_uid(U_.upper()) == UID
    with pytest.raises(UsageError, match="not a pod UID"):
        normalize_uid("default/pod-a")


def test_static_pod_hash_is_the_node_side_uid() -> None:
    """A static pod's cgroups carry its config hash (32 hex, no dashes); the API's mirror pod has its own UID
    and the hash in an annotation, which the cluster side sends to the node instead."""
    from kubernetes import client

    from cniprof.k8s.resolve import MIRROR_ANNOTATION, pod_info

    digest = "5b3c0d8e9a7f41c2b6d4e1f0a9c8b7d6"
    assert pod_uid_in(f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{digest}.slice/cri-x.scope") \
        == digest == normalize_uid(digest)
    mirror = client.V1Pod(
        metadata=client.V1ObjectMeta(name="etcd-n1", namespace="kube-system", uid=UID,
                                     annotations={MIRROR_ANNOTATION: digest}),
        spec=client.V1PodSpec(node_name="n1", host_network=True, containers=[client.V1Container(name="etcd")]),
        status=client.V1PodStatus(phase="Running", pod_ip="192.0.2.5"))
    info = pod_info(mirror)
    assert info.uid == digest and info.host_network
