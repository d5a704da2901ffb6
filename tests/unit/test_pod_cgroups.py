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
