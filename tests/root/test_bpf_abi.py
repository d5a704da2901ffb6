# SPDX-License-Identifier: Apache-2.0
"""Every ctypes mirror of a bpf/<name>.h agrees with the compiled object's BTF, for both target architectures.

One place for the check (STYLE.md: define the ABI once and check the Python side against the object's BTF);
each probe's own test module checks its header's constants."""

from __future__ import annotations

import ctypes
from pathlib import Path

import dropper
import pytest

from cniprof.bpf import build
from cniprof.bpf.btf import Btf
from cniprof.lab import cilium_abi
from cniprof.probes import cpu_abi, hops_abi, nfhooks_abi

ROOT = Path(__file__).resolve().parents[2]
MIRRORS = {"hops": hops_abi, "cpu": cpu_abi, "nfhooks": nfhooks_abi, "cilium_tc": cilium_abi, "dropper": dropper}


@pytest.fixture(scope="module", params=build.ARCHES)
def objects(request, tmp_path_factory) -> dict[str, Btf]:
    out = tmp_path_factory.mktemp(f"obj-{request.param}")
    build.build(ROOT / "bpf", out, request.param)
    return {name: Btf.from_elf(out / f"{name}.bpf.o") for name in MIRRORS}


@pytest.mark.parametrize("obj", sorted(MIRRORS))
def test_struct_layouts_match_btf(objects: dict[str, Btf], obj: str) -> None:
    btf = objects[obj]
    for cname, py in MIRRORS[obj].STRUCTS.items():
        layout = btf.struct_layout(cname)
        assert btf.sizeof(cname) == ctypes.sizeof(py), cname
        assert [f[0] for f in py._fields_] == list(layout), cname
        for name, _ in py._fields_:
            field = getattr(py, name)
            assert layout[name] == (field.offset, field.size), (cname, name)
