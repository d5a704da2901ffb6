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
from pathlib import Path

import pytest

from cniprof.cni.topology import NETNS_DIR, Topology
from cniprof.node.pods import pod_netns, pod_processes

pytestmark = pytest.mark.root
LAB_ID = os.environ.get("CNIPROF_LAB_ID", "")


def _mounts() -> list[tuple[str, str, str]]:
    rows = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _dev, where, fstype, opts, *_ = line.split()
        rows.append((where, fstype, opts))
    return rows


def hierarchies() -> list[tuple[str, Path]]:
    """('v2', mount) for the cgroup2 mount, ('v1', mount) for one named v1 hierarchy where there is one."""
    found: list[tuple[str, Path]] = []
    v2 = [Path(w) for w, t, _ in _mounts() if t == "cgroup2"]
    if v2:
        found.append(("v2", v2[0]))
    v1 = [Path(w) for w, t, o in _mounts() if t == "cgroup" and ("pids" in o.split(",") or "name=systemd" in o)]
    if v1:
        found.append(("v1", v1[0]))
    return found


def layouts(uid: str, cid: str) -> dict[str, str]:
    u_ = uid.replace("-", "_")
    return {
        "systemd-containerd-burstable":
            f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u_}.slice/cri-containerd-{cid}.scope",
        "systemd-crio-guaranteed": f"kubepods.slice/kubepods-pod{u_}.slice/crio-{cid}.scope",
        "cgroupfs-containerd-besteffort": f"kubepods/besteffort/pod{uid}/{cid}",
        "cgroupfs-crio-burstable": f"kubepods/burstable/pod{uid}/crio-{cid}",
    }


class FakeKubelet:
    """Test-owned cgroup sub-hierarchies (unique names) and the processes put in them; removed in close()."""

    def __init__(self) -> None:
        self.tag = f"cniprof-test-{LAB_ID or 'x'}-{uuid.uuid4().hex[:8]}"
        self.roots: list[Path] = []
        self.procs: list[subprocess.Popen] = []

    def start_in(self, netns: str, hierarchy: Path, rel: str) -> int:
        root = hierarchy / self.tag
        if root not in self.roots:
            root.mkdir()
            self.roots.append(root)
        leaf = root / rel
        leaf.mkdir(parents=True)
        proc = subprocess.Popen(["ip", "netns", "exec", netns, "sleep", "120"], stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        (leaf / "cgroup.procs").write_text(str(proc.pid))
        return proc.pid

    def close(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait(timeout=10)
        for root in self.roots:  # deepest first: a cgroup is removable once its children are
            for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                d.rmdir()
            root.rmdir()


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
