# SPDX-License-Identifier: Apache-2.0
"""Symbolization: kallsyms parsing and binary search, /proc/<pid>/maps parsing, ELF symbols of a real library."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import pytest

from cniprof.errors import EnvironmentProblem
from cniprof.probes.symbols import ElfSymbols, Kallsyms, UserSymbols, parse_kallsyms, parse_maps

KALLSYMS = """\
ffffffff81000000 T _stext
ffffffff81dbd860 t __pfx_veth_xmit
ffffffff81dbd870 t veth_xmit
ffffffff81dbdc10 t veth_poll
ffffffff8215b8e0 t br_handle_frame
ffffffff82200000 D some_data
ffffffffc0a01000 t vxlan_rcv\t[vxlan]
ffffffffc0a02000 t vxlan_xmit\t[vxlan]
"""


def test_kallsyms_lookup() -> None:
    k = Kallsyms(parse_kallsyms(KALLSYMS))
    assert len(k) == 7  # data symbols are not functions
    assert k.lookup(0xFFFFFFFF81DBD870) == "veth_xmit"
    assert k.lookup(0xFFFFFFFF81DBD9AB) == "veth_xmit"
    assert k.lookup(0xFFFFFFFF81DBDC10 + 4) == "veth_poll"
    assert k.lookup(0xFFFFFFFF80000000) is None  # below every symbol
    assert k.lookup(0xFFFFFFFFC0A01010) == "vxlan_rcv" and k.module(0xFFFFFFFFC0A01010) == "vxlan"
    assert k.module(0xFFFFFFFF81DBD870) is None
    assert k.lookup(0xFFFFFFFFC0A02000 + (2 << 20)) is None  # far past the last symbol: not inside it
    assert k.frame(0xFFFFFFFF70000000) == "0xffffffff70000000"


def test_kallsyms_hidden_addresses(tmp_path: Path) -> None:
    hidden = tmp_path / "kallsyms"
    hidden.write_text("0000000000000000 T _stext\n0000000000000000 t veth_xmit\n")
    with pytest.raises(EnvironmentProblem, match="needs root"):
        Kallsyms.load(hidden)
    with pytest.raises(EnvironmentProblem, match="cannot read"):
        Kallsyms.load(tmp_path / "missing")


def test_parse_maps() -> None:
    maps = parse_maps(
        "55d0c0a00000-55d0c0a20000 r--p 00000000 08:01 12 /usr/bin/iperf3\n"
        "55d0c0a20000-55d0c0a40000 r-xp 00020000 08:01 12 /usr/bin/iperf3\n"
        "7f0000000000-7f0000100000 r-xp 00028000 08:01 34 /usr/lib/x86_64-linux-gnu/libc.so.6\n"
        "7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]\n"
        "7ffd00100000-7ffd00102000 r-xp 00000000 00:00 0 [vdso]\n")
    assert [(m.path.rsplit("/", 1)[1], m.offset) for m in maps] == [("iperf3", 0x20000), ("libc.so.6", 0x28000)]


def _libc() -> str:
    for line in Path("/proc/self/maps").read_text().splitlines():
        path = line.split()[-1]
        if "/libc.so" in path or "/libc-" in path:
            return path
    pytest.skip("no libc mapping")


def test_elf_symbols_of_libc() -> None:
    elf = ElfSymbols.read(_libc())
    assert elf.loads and elf.names
    # the address of write() in this process, through our own maps, resolves back to a libc function name
    addr = ctypes.cast(ctypes.CDLL(None).write, ctypes.c_void_p).value
    users = UserSymbols()
    name = users.frame(os.getpid(), addr)
    assert name in {"write", "__write", "__libc_write"}
    assert users.stack(os.getpid(), [addr, 0x10]) == [name]  # a walk stops at the first unexplained address
    assert users.stack(os.getpid(), [0x10]) == ["[unknown]"]
    assert ElfSymbols.read("/nonexistent").names == []
