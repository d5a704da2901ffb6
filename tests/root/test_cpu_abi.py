# SPDX-License-Identifier: Apache-2.0
"""The ctypes mirror of bpf/cpu.h names the same constants as the header (struct layouts: test_bpf_abi.py)."""

from __future__ import annotations

import re
from pathlib import Path

from cniprof.probes import cpu_abi as abi

ROOT = Path(__file__).resolve().parents[2]


def test_constants_match_header() -> None:
    header = (ROOT / "bpf" / "cpu.h").read_text()
    for const in ("CPU_MAX_DEPTH", "CPU_USER_DEPTH", "CPU_KSTACK_ENTRIES", "CPU_USTACK_ENTRIES", "CPU_MAX_KEYS",
                  "CPU_NR_SOFTIRQS", "CPU_COMM_LEN"):
        assert re.search(rf"#define {const} {getattr(abi, const)}\b", header), const
    assert f"CPU_C_COUNT = {abi.CPU_C_COUNT}," in header
    for i, name in enumerate(abi.COUNTERS):
        assert re.search(rf"CPU_C_{name.upper()} = {i},", header), name


def test_softirq_vectors_match_kernel_btf() -> None:
    """The vector names (index = vector) match the kernel's enum, as dumped into the checked-in vmlinux.h."""
    vmlinux = (ROOT / "bpf" / "vmlinux.h").read_text()
    for vec, name in enumerate(abi.SOFTIRQ_NAMES):
        assert f"\t{name}_SOFTIRQ = {vec},\n" in vmlinux, name
    assert f"\tNR_SOFTIRQS = {abi.CPU_NR_SOFTIRQS},\n" in vmlinux
    assert abi.SOFTIRQ_NAMES[abi.NET_RX] == "NET_RX" and abi.SOFTIRQ_NAMES[abi.NET_TX] == "NET_TX"
