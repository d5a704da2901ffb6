# SPDX-License-Identifier: Apache-2.0
"""Kernel run-time statistics of a loaded BPF program (run_time_ns, run_cnt from struct bpf_prog_info).

Why decode with offsets from the running kernel's BTF: struct bpf_prog_info grows between kernel versions, and
reading its members at offsets taken from /sys/kernel/btf/vmlinux keeps this correct on any kernel that has the
members, instead of freezing one kernel's layout into a ctypes mirror.

The kernel only counts while statistics are enabled (sysctl kernel.bpf_stats_enabled = 1, or an fd from the
BPF_ENABLE_STATS command is open); otherwise both values stay where they were (0 for a fresh program).
"""

from __future__ import annotations

import functools
import os
import struct

from cniprof.bpf.btf import vmlinux
from cniprof.bpf.libbpf import enable_stats, prog_info
from cniprof.errors import EnvironmentProblem

STATS_SYSCTL = "/proc/sys/kernel/bpf_stats_enabled"
_FIELDS = ("run_time_ns", "run_cnt")


@functools.lru_cache(maxsize=1)
def _layout() -> tuple[int, int, int]:
    """(sizeof struct bpf_prog_info, offset of run_time_ns, offset of run_cnt) for this kernel.

    Both members are __u64 in the UAPI header since they were added (Linux 5.1); only their offsets move."""
    size, offsets = vmlinux().member_offsets("bpf_prog_info")
    missing = [f for f in _FIELDS if f not in offsets]
    if missing:
        raise EnvironmentProblem(f"this kernel's bpf_prog_info has no {', '.join(missing)}: "
                                 "BPF run-time statistics need Linux 5.1 or newer")
    return size, offsets["run_time_ns"], offsets["run_cnt"]


def prog_stats(fd: int) -> tuple[int, int]:
    """(run_time_ns, run_cnt) of the program behind fd, cumulative since it was loaded.

    run_time_ns covers the program body only, not the tracepoint/trampoline dispatch around it.
    """
    size, time_off, cnt_off = _layout()
    raw = prog_info(fd, size)
    if len(raw) < max(time_off, cnt_off) + 8:
        raise EnvironmentProblem(f"the kernel returned {len(raw)} bytes of bpf_prog_info, too few for run-time "
                                 "statistics")
    (run_time_ns,) = struct.unpack_from("=Q", raw, time_off)
    (run_cnt,) = struct.unpack_from("=Q", raw, cnt_off)
    return run_time_ns, run_cnt


class RunTimeStats:
    """Run-time statistics switched on for as long as this object is open (the BPF_ENABLE_STATS command, Linux 5.8+).

    Unlike writing the sysctl, nothing machine-wide is left changed: the kernel counts while any such fd is open
    and stops when the last one closes, also when the process dies. The accounting applies to every BPF program on
    the machine while it is on (two clock reads per run), which is why a run holds it only as long as it traces.
    """

    def __init__(self) -> None:
        self.fd: int | None = enable_stats()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> RunTimeStats:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
