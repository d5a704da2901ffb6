# SPDX-License-Identifier: Apache-2.0
"""The ctypes mirror of bpf/hops.h names the same constants as the header (struct layouts: test_bpf_abi.py)."""

from __future__ import annotations

import re
from pathlib import Path

from cniprof.probes import hops_abi as abi

ROOT = Path(__file__).resolve().parents[2]


def test_constants_match_header() -> None:
    header = (ROOT / "bpf" / "hops.h").read_text()
    for const in ("HIST_SUB_BITS", "HIST_BUCKETS", "MAX_POINTS", "MAX_HOPS", "MAX_DIRS", "PT_START", "PT_END",
                  "PT_RESET", "DEV_SLOTS", "DEV_PROBES", "TRACK_SLOTS", "C_COUNT"):
        assert f"#define {const} {getattr(abi, const)}" in header or f"{const} = {getattr(abi, const)}" in header
    c_names = ("STARTED", "UNEXPECTED", "STALE", "END_COPY", "END_FREE", "END_DROP", "CANDIDATES", "LOST",
               "END_PATH", "CUT")
    assert len(c_names) == len(abi.COUNTERS)
    for i, name in enumerate(c_names):
        assert re.search(rf"\bC_{name} = {i},", header), name
    for name, value in abi.EVENTS.items():
        assert f"EV_{name.upper()} = {value}," in header
