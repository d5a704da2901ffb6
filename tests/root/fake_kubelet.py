# SPDX-License-Identifier: Apache-2.0
"""The kubelet's cgroup layout, for real, in a sub-hierarchy a test owns: processes started in lab namespaces
and put in cgroups named as the kubelet names a pod's (tests/root/test_pod_netns.py, test_k8s_lab.py)."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

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


