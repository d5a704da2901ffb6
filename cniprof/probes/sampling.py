# SPDX-License-Identifier: Apache-2.0
"""Choosing 1-in-N sampling from the offered load (`--sample auto`).

Each tracked packet costs a clock read and a histogram update at every point it passes, an untracked one only a
few array lookups; the tracked rate, not the packet rate, is what slows the datapath down. Auto mode measures the
rate of packets matching a start point during a short calibration window at N = 1 and picks the smallest N that
keeps the tracked rate under a budget. Deterministic 1-in-N (per CPU) does not prefer any part of a burst, so
the latency distributions stay unbiased; only the packet counts are scaled down, and reports say by how much.
"""

from __future__ import annotations

import math

# tracked packets per second over all directions: on the 2-CPU flannel lab, ~8k/s keeps an iperf3
# stream within a few percent of its untraced throughput (benchmarks/overhead.py)
AUTO_TRACKED_PER_S = 8_000.0
CALIBRATION_S = 0.5


def choose_sample_every(candidates: int, seconds: float, budget_per_s: float = AUTO_TRACKED_PER_S) -> int:
    """Smallest N such that candidates/seconds/N <= budget (at least 1)."""
    if seconds <= 0 or candidates <= 0:
        return 1
    return max(1, math.ceil(candidates / seconds / budget_per_s))
