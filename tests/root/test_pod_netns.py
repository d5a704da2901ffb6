# SPDX-License-Identifier: Apache-2.0
"""Pod UID -> network namespace on a node, for real: processes started in the lab's pod namespaces are put in
cgroups named as the kubelet names them (systemd and cgroupfs drivers, containerd and CRI-O, QoS classes), under
a sub-hierarchy this test creates in the machine's cgroup filesystems (cgroup v2, and v1 where mounted) and
removes at the end; then `cniprof k8s pod-netns UID` (what a cluster run asks the agent pod) must name each pod's
own namespace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
from fake_kubelet import FakeKubelet, hierarchies, layouts

from cniprof.cni.topology import NETNS_DIR, Topology
from cniprof.node.pods import pod_netns, pod_processes

pytestmark = pytest.mark.root


@pytest.fixture
def kubelet() -> Iterator[FakeKubelet]:
    k = FakeKubelet()
    try:
        yield k
    finally:
        k.close()
    assert not any(r.exists() for r in k.roots)


def _inode(netns: str) -> int:
    return os.stat(f"{NETNS_DIR}/{netns}").st_ino


def test_each_layout_resolves_to_the_pods_namespace(lab: Topology, kubelet: FakeKubelet) -> None:
    found = hierarchies()
    assert found and found[0][0] == "v2", "no cgroup2 mount"
    cases = []  # (uid, lab pod, expected pid)
    pods = lab.pods
    for h, (version, mount) in enumerate(found):
        for i, (name, _) in enumerate(layouts("0" * 36, "0").items()):
            pod = pods[(h * 4 + i) % len(pods)]
            uid = str(uuid.uuid4())
            rel = layouts(uid, uuid.uuid4().hex * 2)[name]
            pid = kubelet.start_in(pod.netns, mount, rel)
            cases.append((f"{version}:{name}", uid, pod, pid))
    assert len(cases) >= 4
    for label, uid, pod, pid in cases:
        assert pod_processes(uid) == [pid], label
        got = pod_netns(uid)
        assert (got.pid, got.inode, got.processes) == (pid, _inode(pod.netns), 1), label
        assert os.stat(got.path).st_ino == _inode(pod.netns), label
        assert got.inode != os.stat("/proc/self/ns/net").st_ino


def test_two_processes_of_one_pod_and_the_cli(lab: Topology, kubelet: FakeKubelet) -> None:
    """A pod with two containers (two processes, one namespace): the lowest PID is the handle; the agent-side
    command prints one JSON line per UID and refuses an unknown UID in one line."""
    (_, mount) = hierarchies()[0]
    a, b = lab.pods[0], lab.pods[-1]
    uid_a, uid_b = str(uuid.uuid4()), str(uuid.uuid4())
    pids_a = [kubelet.start_in(a.netns, mount, layouts(uid_a, uuid.uuid4().hex * 2)["systemd-crio-guaranteed"])
              for _ in range(2)]
    kubelet.start_in(b.netns, mount, layouts(uid_b, uuid.uuid4().hex * 2)["cgroupfs-crio-burstable"])
    out = subprocess.run([sys.executable, "-m", "cniprof", "k8s", "pod-netns", uid_a, uid_b.replace("-", "_"),
                          "--proc", "/proc"], check=False, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["uid"] for r in rows] == [uid_a, uid_b]
    assert rows[0]["pid"] == min(pids_a) and rows[0]["processes"] == 2
    assert [r["inode"] for r in rows] == [_inode(a.netns), _inode(b.netns)]
    missing = str(uuid.uuid4())
    out = subprocess.run([sys.executable, "-m", "cniprof", "k8s", "pod-netns", missing, "--proc", "/proc"],
                         check=False, capture_output=True, text=True, timeout=60)
    assert out.returncode == 3 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and f"no process of pod {missing}" in out.stderr


def test_a_process_that_left_the_pods_namespace_is_outvoted(lab: Topology, kubelet: FakeKubelet) -> None:
    (_, mount) = hierarchies()[0]
    pod, other = lab.pods[0], lab.pods[1]
    uid = str(uuid.uuid4())
    rel = layouts(uid, "c" * 64)["cgroupfs-containerd-besteffort"]
    stray = kubelet.start_in(other.netns, mount, rel)  # lowest PID, but alone in its namespace
    kubelet.start_in(pod.netns, mount, rel + "-2")
    kubelet.start_in(pod.netns, mount, rel + "-3")
    got = pod_netns(uid)
    assert got.inode == _inode(pod.netns) and got.pid != stray and got.processes == 3
