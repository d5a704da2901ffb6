# SPDX-License-Identifier: Apache-2.0
"""The ctypes mirror of bpf/hops.h names the same constants as the header (struct layouts: test_bpf_abi.py)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from cniprof.bpf.btf import has_drop_reasons
from cniprof.bpf.build import object_path
from cniprof.bpf.libbpf import Object
from cniprof.probes import hops_abi as abi
from cniprof.probes.hops import object_name

ROOT = Path(__file__).resolve().parents[2]


def test_constants_match_header() -> None:
    header = (ROOT / "bpf" / "hops.h").read_text()
    for const in ("HIST_SUB_BITS", "HIST_BUCKETS", "MAX_POINTS", "MAX_HOPS", "MAX_DIRS", "PT_START", "PT_END",
                  "PT_RESET", "DEV_SLOTS", "DEV_PROBES", "TRACK_SLOTS", "C_COUNT", "COUNTER_SETS"):
        assert f"#define {const} {getattr(abi, const)}" in header or f"{const} = {getattr(abi, const)}" in header
    c_names = ("STARTED", "UNEXPECTED", "STALE", "END_COPY", "END_FREE", "END_DROP", "CANDIDATES", "LOST",
               "END_PATH", "END_UNSEEN")
    assert len(c_names) == len(abi.COUNTERS)
    for i, name in enumerate(c_names):
        assert re.search(rf"\bC_{name} = {i},", header), name
    for name, value in abi.EVENTS.items():
        assert f"EV_{name.upper()} = {value}," in header
    for i, name in enumerate(("FREE", "UNSEEN", "LOST", "STALE")):  # abi.END_KINDS, as the snapshot names them
        assert re.search(rf"\bEND_{name} = {i},", header), name
    assert len(abi.END_KINDS) == 4 and f"END_KINDS = {len(abi.END_KINDS)}," in header


def test_legacy_object_has_no_atomics_and_loads() -> None:
    """bpf/hops_legacy.bpf.c (kernels before 5.12) must not hold a BPF atomic: a 5.10 verifier refuses the whole
    object for one, dead code included. Here it must also load, with the same programs as the main object."""
    assert (object_name("5.10.209"), object_name("5.12.0"), object_name("6.18.44-fc")) == \
        ("hops_legacy", "hops", "hops")
    legacy, main = object_path("hops_legacy"), object_path("hops")
    text = subprocess.run(["llvm-objdump", "-d", str(legacy)], capture_output=True, text=True, check=True).stdout
    assert "cmpxchg" not in text and "cmpxchg" in subprocess.run(
        ["llvm-objdump", "-d", str(main)], capture_output=True, text=True, check=True).stdout
    with Object(legacy) as obj:
        skip = abi.DROP_PROGRAMS[not has_drop_reasons()]
        for name in obj.program_names():
            obj.set_autoload(name, name != skip)
        obj.load()
        with Object(main) as ref:
            assert obj.program_names() == ref.program_names()
