# SPDX-License-Identifier: Apache-2.0
"""The pure-Python BTF reader against this kernel's BTF and against a BPF object compiled here."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest

from cniprof.bpf import btf
from cniprof.bpf.build import build, find_clang
from cniprof.errors import CniprofError

needs_vmlinux = pytest.mark.skipif(not btf.VMLINUX_BTF.exists(), reason="kernel without /sys/kernel/btf/vmlinux")
REPO_BPF = Path(__file__).resolve().parents[2] / "bpf"

LAYOUT_SOURCE = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

enum probe_color { PROBE_RED = 1, PROBE_BLUE = 7, PROBE_NEG = -3 };

struct probe_inner { __u16 x; __u16 y; };

struct probe_layout {
    __u32 a;                 /* 0, 4 */
    __u64 b;                 /* 8, 8 (aligned) */
    __u8 c[3];               /* 16, 3 */
    struct probe_inner in;   /* 20, 4 */
    union { __u32 u32v; __u64 u64v; };  /* anonymous: flattened, 24, 4 / 24, 8 */
    void *p;                 /* 32, 8 */
    __u32 flags : 3;         /* bitfield in the byte at 40 */
    __u32 more : 13;         /* bits 43..55: bytes 40..41 */
};

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct probe_layout);
} layout_map SEC(".maps");

enum probe_color color_used;

SEC("tp_btf/net_dev_queue")
int probe(void *ctx)
{
    __u32 key = 0;
    struct probe_layout *v = bpf_map_lookup_elem(&layout_map, &key);
    if (v)
        v->a = color_used;
    return 0;
}

char LICENSE[] SEC("license") = "GPL";
"""


@pytest.fixture(scope="module")
def layout_object(tmp_path_factory) -> Path:
    try:
        find_clang()
    except CniprofError:
        pytest.skip("clang is not installed (scripts/setup.sh installs it)")
    src = tmp_path_factory.mktemp("btf_src")
    shutil.copy(REPO_BPF / "vmlinux.h", src / "vmlinux.h")
    (src / "layout.bpf.c").write_text(LAYOUT_SOURCE)
    (obj,) = build(src, tmp_path_factory.mktemp("btf_obj"), "x86")
    return obj


@needs_vmlinux
def test_kernel_drop_reasons():
    reasons = btf.vmlinux().enum_values("skb_drop_reason")
    assert "SKB_DROP_REASON_NOT_SPECIFIED" in reasons
    assert "SKB_DROP_REASON_NETFILTER_DROP" in reasons
    names = btf.drop_reason_names()
    assert names[reasons["SKB_DROP_REASON_NOT_SPECIFIED"]] == "NOT_SPECIFIED"
    assert names[reasons["SKB_DROP_REASON_NETFILTER_DROP"]] == "NETFILTER_DROP"
    assert "MAX" not in names.values()
    assert btf.drop_reason_names() is names  # cached


@needs_vmlinux
def test_kernel_sk_buff_layout():
    b = btf.vmlinux()
    layout = b.struct_layout("sk_buff")
    assert layout["len"][1] == 4
    assert layout["dev"][1] == 8  # a pointer inside an anonymous union: flattened
    assert layout["dev"][0] < layout["len"][0] < b.sizeof("sk_buff")
    assert b.struct_layout("struct sk_buff") == layout
    assert b.sizeof("u32") == 4


@needs_vmlinux
def test_vmlinux_h_matches_kernel():
    """The checked-in vmlinux.h was generated from a kernel whose enum agrees with this one (or is a prefix)."""
    reasons = btf.vmlinux().enum_values("skb_drop_reason")
    header = (REPO_BPF / "vmlinux.h").read_text()
    assert f"SKB_DROP_REASON_NOT_SPECIFIED = {reasons['SKB_DROP_REASON_NOT_SPECIFIED']}," in header


def test_object_struct_layout(layout_object):
    b = btf.Btf.from_elf(layout_object)
    assert b.struct_layout("probe_layout") == {
        "a": (0, 4),
        "b": (8, 8),
        "c": (16, 3),
        "in": (20, 4),
        "u32v": (24, 4),
        "u64v": (24, 8),
        "p": (32, 8),
        "flags": (40, 1),
        "more": (40, 2),
    }
    assert b.sizeof("probe_layout") == 48
    assert b.sizeof("struct probe_inner") == 4
    assert b.sizeof("__u64") == 8


def test_object_enum_values(layout_object):
    values = btf.Btf.from_elf(layout_object).enum_values("probe_color")
    assert (values["PROBE_RED"], values["PROBE_BLUE"]) == (1, 7)
    # Signedness is BTF's kind_flag, which clang >= 15 sets; clang 14 leaves it 0, so -3 reads as unsigned.
    assert values["PROBE_NEG"] & 0xFFFFFFFF == (1 << 32) - 3


def test_object_is_bpf_elf(layout_object):
    info = btf.read_elf(layout_object)
    assert info.machine == btf.EM_BPF
    assert ".BTF" in info.sections and ".BTF.ext" in info.sections


def test_unknown_names_are_errors(layout_object):
    b = btf.Btf.from_elf(layout_object)
    with pytest.raises(CniprofError, match="no STRUCT/UNION named 'no_such_struct'"):
        b.struct_layout("no_such_struct")
    with pytest.raises(CniprofError):
        b.enum_values("no_such_enum")


def test_bad_input_is_an_error(tmp_path):
    bad = tmp_path / "bad.btf"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(CniprofError, match="bad BTF magic"):
        btf.Btf.load(bad)
    with pytest.raises(CniprofError, match="not an ELF file"):
        btf.Btf.from_elf(bad)
    with pytest.raises(CniprofError, match="does not exist"):
        btf.Btf.load(tmp_path / "missing")


def _tiny_btf(endian: str) -> bytes:
    """A hand-made BTF blob: int, enum64 'big' {HUGE = 2**40}, signed enum 'sgn' {NEG = -3}."""
    strings = b"\0int\0big\0HUGE\0sgn\0NEG\0"
    types = struct.pack(endian + "III", 1, (1 << 24), 4) + struct.pack(endian + "I", 32)  # INT 'int' 32 bits
    types += struct.pack(endian + "III", 5, (19 << 24) | 1, 8)  # ENUM64 'big', 1 value, size 8
    types += struct.pack(endian + "III", 9, 0, 1 << 8)  # HUGE = lo 0, hi 256
    types += struct.pack(endian + "III", 14, (1 << 31) | (6 << 24) | 1, 4)  # ENUM 'sgn', kind_flag: signed
    types += struct.pack(endian + "Ii", 18, -3)
    header = struct.pack(endian + "HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return header + types + strings


@pytest.mark.parametrize("endian", ["<", ">"])
def test_hand_made_blob(endian):
    b = btf.Btf(_tiny_btf(endian))
    assert b.type_count == 3
    assert b.enum_values("enum sgn") == {"NEG": -3}
    assert b.sizeof("int") == 4
    assert b.enum_values("big") == {"HUGE": 1 << 40}
    assert b.type(2).kind_name == "ENUM64"
