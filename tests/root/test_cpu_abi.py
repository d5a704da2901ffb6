# SPDX-License-Identifier: Apache-2.0
"""The ctypes mirror of bpf/cpu.h agrees with the compiled object's BTF, for both target architectures."""

from __future__ import annotations

import ctypes
import re
from pathlib import Path

import pytest

from cniprof.bpf import build
from cniprof.bpf.btf import Btf
from cniprof.probes import cpu_abi as abi

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", params=["x86", "arm64"])
def cpu_btf(request, tmp_path_factory) -> Btf:
    out = tmp_path_factory.mktemp(f"obj-{request.param}")
    build.build(ROOT / "bpf", out, request.param)
    return Btf.from_elf(out / "cpu.bpf.o")


@pytest.mark.parametrize("cname", sorted(abi.STRUCTS))
def test_struct_layout_matches_btf(cpu_btf: Btf, cname: str) -> None:
    py = abi.STRUCTS[cname]
    layout = cpu_btf.struct_layout(cname)
    assert cpu_btf.sizeof(cname) == ctypes.sizeof(py)
    assert [f[0] for f in py._fields_] == list(layout)
    for name, _ in py._fields_:
        field = getattr(py, name)
        assert layout[name] == (field.offset, field.size), name


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
