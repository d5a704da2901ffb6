# SPDX-License-Identifier: Apache-2.0
"""The Python DEV_HASH/TRACK layout used to fill the device table agrees with the C macros in bpf/hops.h, and
the hash spreads a lab's devices well enough that the open addressing never runs out of probes."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

from cniprof.probes import hops_abi as abi

ROOT = Path(__file__).resolve().parents[2]
CASES = [(4026531840 + i * 131, ifx) for i in range(40) for ifx in (0, 1, 2, 3, 7, 250)]


def test_python_hash_matches_the_c_macro(tmp_path: Path) -> None:
    assert shutil.which("cc"), "no C compiler: run scripts/setup.sh (installs gcc)"
    src = tmp_path / "h.c"
    body = "".join(f'printf("%u\\n", DEV_HASH({n}u, {i}u));\n' for n, i in CASES)
    src.write_text(f'#include <stdio.h>\n#include <linux/types.h>\n#include "hops.h"\nint main(void) {{\n{body}}}\n')
    exe = tmp_path / "h"
    subprocess.run(["cc", "-I", str(ROOT / "bpf"), str(src), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()
    assert [int(x) for x in out] == [abi.dev_hash(n, i) for n, i in CASES]


def test_a_hundred_namespaces_fit_the_probe_budget() -> None:
    """200 labs' worth of namespaces with 8 devices each: linear probing never needs more than DEV_PROBES."""
    rng = random.Random(7)
    for _ in range(200):
        table: set[int] = set()
        inodes = rng.sample(range(4026531840, 4026541840), 12)
        for netns in inodes:
            for ifindex in range(8):
                base = abi.dev_hash(netns, ifindex)
                free = next(i for i in range(abi.DEV_SLOTS) if (base + i) % abi.DEV_SLOTS not in table)
                assert free < abi.DEV_PROBES
                table.add((base + free) % abi.DEV_SLOTS)
