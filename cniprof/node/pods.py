# SPDX-License-Identifier: Apache-2.0
"""A Kubernetes pod on this node, from its UID to its network namespace, without asking the container runtime.

The kubelet puts every container of a pod in a cgroup whose path names the pod's UID. The layouts it uses:

  cgroupfs driver:  /kubepods/pod<uid>/<container>                       (Guaranteed QoS)
                    /kubepods/burstable/pod<uid>/<container>             (Burstable, BestEffort alike)
  systemd driver:   /kubepods.slice/kubepods-pod<uid_>.slice/<runtime>-<id>.scope
                    /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice/...

where <uid_> is the UID with '_' for '-' (systemd unit names cannot hold '-' inside a component), <container>
is containerd's or CRI-O's container id, and <runtime> is `cri-containerd` or `crio`. With cgroup v1 each
controller's hierarchy has the path (`N:controller:/kubepods/...` in /proc/PID/cgroup), with v2 the one line
`0::/kubepods.slice/...`; a prefix above `kubepods` (a nested or containerized kubelet, `--cgroup-root`) is allowed. So: scan
/proc/*/cgroup for a component naming the UID, take a process of the pod, and its /proc/PID/ns/net is the pod's
network namespace (every container of a pod shares the pause container's; a hostNetwork pod's is the node's).
Works the same for containerd and CRI-O, since only the kubelet's part of the path is read.

`proc` is the /proc to read: the agent container mounts the node's at /host/proc; tests use the host's.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cniprof.errors import EnvironmentProblem, UsageError

# one path component naming a pod: [kubepods[-qos]-]pod<uid>[.slice]; a UID is a UUID (36 chars) or, for a
# static pod, the kubelet's 32-hex config hash
_POD_COMPONENT = re.compile(r"^(?:[a-z]+(?:-[a-z]+)*-)?pod([0-9a-fA-F_-]{32,36})(?:\.slice)?$")
_UID = re.compile(r"^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$")


def normalize_uid(uid: str) -> str:
    """The UID as the API shows it (lower case, '-'); raises UsageError for something that is not a UID."""
    norm = uid.strip().lower().replace("_", "-")
    if not _UID.match(norm):
        raise UsageError(f"{uid!r} is not a pod UID (metadata.uid, e.g. 3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f)")
    return norm


def pod_uid_in(cgroup_path: str) -> str | None:
    """The pod UID named by a cgroup path (kubelet layouts above), or None when the path is not a pod's."""
    parts = cgroup_path.split("/")
    if not any("kubepods" in p for p in parts):  # kubepods, kubepods.slice, kubelet-kubepods.slice (--cgroup-root)
        return None
    for part in parts:
        m = _POD_COMPONENT.match(part)
        if m:
            uid = m[1].lower().replace("_", "-")
            return uid if _UID.match(uid) else None
    return None


def cgroup_paths(pid: int, proc: Path = Path("/proc")) -> list[str]:
    """The cgroup paths of a process, one per hierarchy (v1 controllers, v2's `0::`); [] if it is gone."""
    try:
        text = (proc / str(pid) / "cgroup").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    return [line.split(":", 2)[2] for line in text.splitlines() if line.count(":") >= 2]


def _pids(proc: Path) -> Iterator[int]:
    with os.scandir(proc) as it:
        for entry in it:
            if entry.name.isdigit():
                yield int(entry.name)


def pod_processes(uid: str, proc: Path = Path("/proc")) -> list[int]:
    """PIDs (as `proc` numbers them) of every process in a cgroup of the pod, sorted."""
    want = normalize_uid(uid)
    return sorted(pid for pid in _pids(proc) if any(pod_uid_in(p) == want for p in cgroup_paths(pid, proc)))


@dataclass(frozen=True)
class PodNetns:
    uid: str
    pid: int
    path: str  # <proc>/<pid>/ns/net: usable wherever cniprof takes a namespace path
    inode: int
    processes: int  # how many processes of the pod were found


def pod_netns(uid: str, proc: Path = Path("/proc")) -> PodNetns:
    """The network namespace of a pod on this node, through one of its processes.

    Every process of a pod normally shares one namespace; if they do not (a container that left it), the one
    most of them share wins, its lowest PID is the handle (usually the pause process, which lives as long as the
    pod). Raises EnvironmentProblem when no process of the pod is visible.
    """
    want = normalize_uid(uid)
    seen: Counter[int] = Counter()
    first: dict[int, int] = {}
    pids = pod_processes(want, proc)
    for pid in pids:
        try:
            ino = os.stat(proc / str(pid) / "ns" / "net").st_ino
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited meanwhile
        except PermissionError as e:
            raise EnvironmentProblem(f"cannot open {proc}/{pid}/ns/net of pod {want}: {e.strerror} (the agent "
                                     "needs CAP_SYS_PTRACE for processes with capabilities it lacks)") from None
        seen[ino] += 1
        first.setdefault(ino, pid)
    if not seen:
        raise EnvironmentProblem(f"no process of pod {want} in {proc}: is the pod on this node and running, and "
                                 f"is {proc} the node's (hostPID)?")
    ino = max(seen, key=lambda i: (seen[i], -first[i]))
    pid = first[ino]
    return PodNetns(want, pid, str(proc / str(pid) / "ns" / "net"), ino, len(pids))
