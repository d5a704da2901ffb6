# SPDX-License-Identifier: Apache-2.0
"""The ctypes mirror of bpf/hops.h agrees with the compiled object's BTF, for both target architectures."""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest

from cniprof.bpf import build
from cniprof.bpf.btf import Btf
from cniprof.probes import hops_abi as abi

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", params=["x86", "arm64"])
def hops_btf(request, tmp_path_factory) -> Btf:
    out = tmp_path_factory.mktemp(f"obj-{request.param}")
    build.build(ROOT / "bpf", out, request.param)
    return Btf.from_elf(out / "hops.bpf.o")


@pytest.mark.parametrize("cname", sorted(abi.STRUCTS))
def test_struct_layout_matches_btf(hops_btf: Btf, cname: str) -> None:
    py = abi.STRUCTS[cname]
    layout = hops_btf.struct_layout(cname)
    assert hops_btf.sizeof(cname) == ctypes.sizeof(py)
    assert [f[0] for f in py._fields_] == list(layout)
    for name, _ in py._fields_:
        field = getattr(py, name)
        assert layout[name] == (field.offset, field.size), name


def test_constants_match_header() -> None:
    header = (ROOT / "bpf" / "hops.h").read_text()
    for const in ("HIST_SUB_BITS", "HIST_BUCKETS", "MAX_POINTS", "MAX_HOPS", "MAX_DIRS", "PT_START", "PT_END",
                  "C_COUNT"):
        assert f"#define {const} {getattr(abi, const)}" in header or f"{const} = {getattr(abi, const)}" in header
    for name, value in abi.EVENTS.items():
        assert f"EV_{name.upper()} = {value}," in header
