# SPDX-License-Identifier: Apache-2.0
"""ctypes mirror of bpf/cpu.h. tests/root/test_cpu_abi.py checks every struct against the object's BTF (x86 and
arm64), and CpuSampler checks map key/value sizes at load, so a drift between the C and Python sides fails loudly."""

from __future__ import annotations

import ctypes

from cniprof.bpf.btf import c_structs

CPU_MAX_DEPTH = 127
CPU_USER_DEPTH = 32
CPU_KSTACK_ENTRIES = 32768
CPU_USTACK_ENTRIES = 16384
CPU_MAX_KEYS = 32768
CPU_NR_SOFTIRQS = 10
CPU_COMM_LEN = 16
CPU_C_COUNT = 8

COUNTERS = ("samples", "kstack_lost", "ustack_lost", "keys_full", "softirq_orphan")

# enum softirq vector names (include/linux/interrupt.h), index = vector
SOFTIRQ_NAMES = ("HI", "TIMER", "NET_TX", "NET_RX", "BLOCK", "IRQ_POLL", "TASKLET", "SCHED", "HRTIMER", "RCU")
NET_TX = 2
NET_RX = 3

PROGRAMS = ("on_cpu_sample", "on_softirq_entry", "on_softirq_exit")
ATTACH_POINT = {
    "on_cpu_sample": "perf_event/cpu-clock",
    "on_softirq_entry": "tp_btf/irq:softirq_entry",
    "on_softirq_exit": "tp_btf/irq:softirq_exit",
}

u32, s32, u64 = ctypes.c_uint32, ctypes.c_int32, ctypes.c_uint64


class CpuKey(ctypes.Structure):
    _fields_ = [("tgid", u32), ("cpu", u32), ("softirq", u32), ("kstack", s32), ("ustack", s32), ("pad", u32),
                ("comm", ctypes.c_char * CPU_COMM_LEN)]


class CpuVal(ctypes.Structure):
    _fields_ = [("count", u64), ("period_ns", u64)]


class SoftirqStat(ctypes.Structure):
    _fields_ = [("count", u64), ("time_ns", u64)]


class CpuCfg(ctypes.Structure):
    _fields_ = [("user_stacks", u32), ("pad", u32)]


STACK_VALUE = ctypes.c_uint64 * CPU_MAX_DEPTH
USTACK_VALUE = ctypes.c_uint64 * CPU_USER_DEPTH

# (map name, key type, value type) for the load-time size check
MAP_TYPES = {
    "kstacks": (u32, STACK_VALUE),
    "ustacks": (u32, USTACK_VALUE),
    "counts": (CpuKey, CpuVal),
    "softirqs": (u32, SoftirqStat),
    "cpu_counters": (u32, u64),
}
# C struct name -> ctypes mirror, for the BTF check
STRUCTS = c_structs(CpuKey, CpuVal, SoftirqStat, CpuCfg)
