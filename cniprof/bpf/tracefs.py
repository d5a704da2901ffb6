# SPDX-License-Identifier: Apache-2.0
"""tracefs: where it is (or a private mount of it for one helper thread), and return probes with a maxactive.

Why a tracefs event for a return probe: libbpf attaches kretprobes through the kprobe PMU (perf_event_open), which
has no maxactive, so the kernel uses its default: on kernels without CONFIG_PREEMPTION before ~6.5 (Debian's 5.10
cloud kernels) that is one instance per possible CPU, and a call that starts while that many calls are in flight
gets no return probe (the kprobe_profile "misses"). nf_hook_slow nests (the sabotaged PREROUTING walk of a bridged
packet runs FORWARD and POSTROUTING inside it), so on a one-CPU 5.10 guest most inner returns were lost. A
`r<MAXACTIVE>:` line in kprobe_events (Linux 4.12+, at most 4096) sets it; the event is then opened as a
tracepoint perf event and the program attached to that, as libbpf's own pre-PMU path does.

An event is named cniprof/<function>_<pid>; `ReturnProbeEvent.remove()` deletes it once its perf event is closed,
and one left behind by a process that no longer exists is deleted by the next `create()`. kprobe_events is only
ever appended to (opening it for writing without O_APPEND would delete every kprobe event of the machine).
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from cniprof.bpf import libbpf
from cniprof.errors import EnvironmentProblem
from cniprof.netns_exec import in_thread

T = TypeVar("T")

TRACEFS = Path("/sys/kernel/tracing")
DEBUGFS_TRACING = Path("/sys/kernel/debug/tracing")
GROUP = "cniprof"
MAXACTIVE_MAX = 4096  # KRETPROBE_MAXACTIVE_MAX of kernel/trace/trace_kprobe.c
PERF_TYPE_TRACEPOINT = 2

_CLONE_NEWNS = 0x00020000
_MS_REC = 0x4000
_MS_PRIVATE = 1 << 18


def mounted() -> bool:
    return (TRACEFS / "events").is_dir() or (DEBUGFS_TRACING / "events").is_dir()


def directory() -> Path:
    """The tracefs directory this thread sees (inside with_tracefs: always one)."""
    for d in (TRACEFS, DEBUGFS_TRACING):
        if (d / "events").is_dir():
            return d
    raise EnvironmentProblem(f"tracefs is not mounted at {TRACEFS}: `mount -t tracefs nodev {TRACEFS}`")


def _private_mount() -> None:
    """In the calling thread only: a private mount namespace with tracefs at /sys/kernel/tracing."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(_CLONE_NEWNS) != 0:
        raise EnvironmentProblem("tracefs is not mounted and unshare(CLONE_NEWNS) failed: "
                                 f"{libbpf.errno_text(ctypes.get_errno())}")
    # Private first: otherwise the new mount would propagate to the host's shared mounts.
    if libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
        raise EnvironmentProblem(f"cannot make a private mount namespace: {libbpf.errno_text(ctypes.get_errno())}")
    if libc.mount(b"tracefs", str(TRACEFS).encode(), b"tracefs", 0, None) != 0:
        raise EnvironmentProblem("tracefs is not mounted and cannot be mounted: "
                                 f"{libbpf.errno_text(ctypes.get_errno())}")


def with_tracefs(fn: Callable[[], T]) -> T:
    """fn() where tracefs is reachable (libbpf reads tracepoint ids and kprobe_events there): here when the
    machine has it mounted, else in a helper thread with a private mount that dies with the thread."""
    if mounted():
        return fn()
    return in_thread(fn, setup=_private_mount)


def _append(path: Path, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, line.encode() + b"\n")
    finally:
        os.close(fd)


def maxactive_for(ncpu: int) -> int:
    """Return-probe instances for a function that nests a few deep per CPU and may be preempted in process
    context: 16 per possible CPU, at least 64, at most the kernel's limit."""
    return max(64, min(MAXACTIVE_MAX, 16 * ncpu))


class ReturnProbeEvent:
    """A kretprobe on `function` with `maxactive` instances, as a tracefs kprobe event of group cniprof."""

    def __init__(self, function: str, maxactive: int):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", function):
            raise ValueError(f"not a kernel function name: {function!r}")
        self.function = function
        self.maxactive = min(maxactive, MAXACTIVE_MAX)
        self.name = f"{re.sub(r'[^A-Za-z0-9_]', '_', function)}_{os.getpid()}"
        self.created = False

    def create(self) -> int:
        """Define the event and open it as a perf event on all CPUs; returns the perf fd (the caller owns it
        until a program's link takes it, see libbpf.attach_perf_event). Raises OSError or EnvironmentProblem."""
        return with_tracefs(self._create)

    def _create(self) -> int:
        d = directory()
        remove_stale(d)
        _append(d / "kprobe_events", f"r{self.maxactive}:{GROUP}/{self.name} {self.function}")
        self.created = True
        event_id = int((d / "events" / GROUP / self.name / "id").read_text())
        attr = libbpf.PerfEventAttr()
        attr.type = PERF_TYPE_TRACEPOINT
        attr.config = event_id
        return libbpf.perf_event_open(attr, pid=-1, cpu=0)  # a program on a kprobe event runs on every CPU

    def missed(self) -> int | None:
        """Calls whose return the kernel did not probe since create() (kprobe_profile), None if unreadable."""
        if not self.created:
            return None
        try:
            text = with_tracefs(lambda: (directory() / "kprobe_profile").read_text())
        except (OSError, EnvironmentProblem):
            return None
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == self.name:
                return int(parts[2])
        return None

    def remove(self) -> None:
        """Delete the event (after its perf event is closed); idempotent. A failure leaves it for the next
        create() of any cniprof process to remove."""
        if not self.created:
            return
        try:
            with_tracefs(lambda: _append(directory() / "kprobe_events", f"-:{GROUP}/{self.name}"))
            self.created = False
        except (OSError, EnvironmentProblem):
            pass


def remove_stale(d: Path) -> list[str]:
    """Delete the cniprof events whose process is gone (a crash between create and remove); returns their
    names. Events in use (EBUSY) are kept."""
    removed = []
    try:
        lines = (d / "kprobe_events").read_text().splitlines()
    except OSError:
        return removed
    for line in lines:
        m = re.match(rf"[pr]\d*:{GROUP}/(\S+_(\d+))\s", line)
        if not m or _alive(int(m.group(2))):
            continue
        try:
            _append(d / "kprobe_events", f"-:{GROUP}/{m.group(1)}")
            removed.append(m.group(1))
        except OSError as e:
            if e.errno not in (errno.EBUSY, errno.ENOENT):
                raise
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
