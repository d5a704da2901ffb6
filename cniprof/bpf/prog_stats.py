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
import struct

from cniprof.bpf.btf import vmlinux
from cniprof.bpf.libbpf import prog_info
from cniprof.errors import EnvironmentProblem

STATS_SYSCTL = "/proc/sys/kernel/bpf_stats_enabled"
_FIELDS = ("run_time_ns", "run_cnt")


@functools.lru_cache(maxsize=1)
def _layout() -> tuple[int, int, int]:
    """(sizeof struct bpf_prog_info, offset of run_time_ns, offset of run_cnt) for this kernel."""
    btf = vmlinux()
    layout = btf.struct_layout("bpf_prog_info")
    missing = [f for f in _FIELDS if f not in layout]
    if missing:
        raise EnvironmentProblem(f"this kernel's bpf_prog_info has no {', '.join(missing)}: "
                                 "BPF run-time statistics need Linux 5.1 or newer")
    for f in _FIELDS:
        if layout[f][1] != 8:
            raise EnvironmentProblem(f"bpf_prog_info.{f} is {layout[f][1]} bytes in this kernel's BTF, not 8")
    return btf.sizeof("bpf_prog_info"), layout["run_time_ns"][0], layout["run_cnt"][0]


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
