# SPDX-License-Identifier: Apache-2.0
"""Expected values computed straight from a raw snapshot, without cniprof's analysis: what a test compares the
analysis, the exports and the tables with.

Only the contracts of ARCHITECTURE.md are used: a mean is sum_ns / count; a histogram bucket `idx` holds the
integers lower(idx) .. lower(idx) + width(idx) - 1 (16 linear sub-buckets per power of two); the hops inside the
end-to-end time add up to it per packet.
"""

from __future__ import annotations

import math
from typing import Any


def lower(idx: int) -> int:
    return idx if idx < 16 else (16 + idx % 16) << (idx // 16 - 1)


def width(idx: int) -> int:
    return 1 if idx < 16 else 1 << (idx // 16 - 1)


def percentile_range_us(buckets: dict[str, int], p: float) -> tuple[float, float]:
    """The range (us) the p-th percentile must lie in: from the lowest value of the bucket holding the sample of
    rank floor(p/100 * n) to the highest of the bucket holding rank ceil(p/100 * n) (either rounding is fair)."""
    counts = sorted((int(k), int(v)) for k, v in buckets.items() if int(v))
    n = sum(v for _, v in counts)
    ranks = (max(1, math.floor(p / 100 * n)), max(1, math.ceil(p / 100 * n)))
    found = []
    for rank in ranks:
        seen = 0
        for idx, v in counts:
            seen += v
            if seen >= rank:
                found.append(idx)
                break
    lo, hi = min(found), max(found)
    return lower(lo) / 1000, (lower(hi) + width(hi) - 1) / 1000


def mean_us(entry: dict[str, Any]) -> float:
    return entry["sum_ns"] / entry["count"] / 1000


def e2e(snapshot: dict[str, Any], direction: int) -> dict[str, Any]:
    return next(e for e in snapshot["e2e"] if e["dir"] == direction)


def hop_mean_sum_us(snapshot: dict[str, Any], direction: int) -> float:
    """Σ of the means of the expected hops inside the end-to-end time of one direction."""
    return sum(mean_us(h) for h in snapshot["hops"]
               if h["expected"] and h["in_e2e"] and h["dir"] == direction and h["count"])


def unattributed_pct(snapshot: dict[str, Any], direction: int) -> float:
    total = mean_us(e2e(snapshot, direction))
    return 100 * (total - hop_mean_sum_us(snapshot, direction)) / total
