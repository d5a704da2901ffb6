# SPDX-License-Identifier: Apache-2.0
"""Log-linear latency histograms, the user-space half of the bucket contract in ARCHITECTURE.md.

The kernel (bpf/hops.bpf.c) only increments `buckets[bucket_index(delta_ns)]` plus an exact count and sum, so
everything that turns buckets into numbers lives here. Keeping the maths in one small pure module lets the unit
tests pin it against the formula in the architecture document; a drift between the two halves would silently
shift every percentile.

Resolution: values below 16 ns are exact; above, each power of two is cut into 16 linear sub-buckets, so a bucket
is at most 1/16 = 6.25 % of its lower bound wide. The last bucket (511) is open-ended: it absorbs everything from
31 * 2^30 ns (~33 s) up, which for packet latencies only ever means a stale or broken measurement.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import lazy_loader

if TYPE_CHECKING:
    import numpy as np
else:  # imported on first use: a command that does not need it does not wait for it
    np = lazy_loader.load("numpy")

HIST_SUB_BITS = 4
HIST_SUB = 1 << HIST_SUB_BITS  # 16 linear sub-buckets per power of two
HIST_BUCKETS = 512


def bucket_index(v_ns: int) -> int:
    """The bucket a latency of `v_ns` nanoseconds falls into (same integer maths as the BPF program)."""
    v = int(v_ns)
    if v < 0:
        raise ValueError(f"latency must be >= 0 ns, got {v_ns}")
    if v < HIST_SUB:
        return v
    e = v.bit_length() - 1  # floor(log2 v), exact for any int
    idx = (e - HIST_SUB_BITS + 1) * HIST_SUB + ((v >> (e - HIST_SUB_BITS)) & (HIST_SUB - 1))
    return min(idx, HIST_BUCKETS - 1)


def bucket_indices(values_ns: Iterable[int] | np.ndarray) -> np.ndarray:
    """Vectorised bucket_index for building histograms from many recorded values (tests, fixtures)."""
    v = np.asarray(values_ns, dtype=np.int64)
    if v.size and v.min() < 0:
        raise ValueError("latencies must be >= 0 ns")
    # frexp is exact for integers below 2^53: v = m * 2^x with m in [0.5, 1) so floor(log2 v) = x - 1.
    _, x = np.frexp(np.maximum(v, 1).astype(np.float64))
    e = x.astype(np.int64) - 1
    shift = np.maximum(e - HIST_SUB_BITS, 0)
    idx = (e - HIST_SUB_BITS + 1) * HIST_SUB + ((v >> shift) & (HIST_SUB - 1))
    idx = np.where(v < HIST_SUB, v, idx)
    return np.minimum(idx, HIST_BUCKETS - 1)


def bucket_bounds(idx: int) -> tuple[int, int]:
    """(low, high) of bucket `idx` in ns, high exclusive: the bucket holds the integers low .. high-1.

    For the last bucket `high` is nominal (2^35 ns); larger values also land there.
    """
    if not 0 <= idx < HIST_BUCKETS:
        raise ValueError(f"bucket index out of range 0..{HIST_BUCKETS - 1}: {idx}")
    if idx < HIST_SUB:
        return idx, idx + 1
    shift = idx // HIST_SUB - 1
    low = (HIST_SUB + idx % HIST_SUB) << shift
    return low, low + (1 << shift)


@functools.cache
def _bounds() -> tuple[np.ndarray, np.ndarray]:
    """Every bucket's (low, high) as float arrays; built on first use, so importing this module loads no numpy."""
    return (np.array([bucket_bounds(i)[0] for i in range(HIST_BUCKETS)], dtype=np.float64),
            np.array([bucket_bounds(i)[1] for i in range(HIST_BUCKETS)], dtype=np.float64))


def _dense(buckets: Mapping[str | int, int] | None) -> np.ndarray:
    out = np.zeros(HIST_BUCKETS, dtype=np.int64)
    for key, n in (buckets or {}).items():
        i = int(key)
        if not 0 <= i < HIST_BUCKETS:
            raise ValueError(f"bucket index out of range 0..{HIST_BUCKETS - 1}: {key!r}")
        out[i] += int(n)
    return out


@dataclass(eq=False)
class Histogram:
    """One latency distribution: dense bucket counts plus the kernel's exact packet count and sum.

    `count` and `sum_ns` come from separate kernel counters rather than from the buckets because they are exact
    (the mean needs no bucket approximation) and because a snapshot read while packets flow can see them a few
    increments apart from the buckets; percentiles use the bucket total, the mean uses count and sum_ns.
    `sum_ns` may be None when only buckets are known; the mean then falls back to bucket midpoints.
    """

    buckets: np.ndarray = field(default_factory=lambda: np.zeros(HIST_BUCKETS, dtype=np.int64))
    count: int = 0
    sum_ns: int | None = 0

    @classmethod
    def from_sparse(
        cls, buckets: Mapping[str | int, int] | None, count: int | None = None, sum_ns: int | None = None
    ) -> Histogram:
        """Build from the snapshot's sparse {"<idx>": count}; `count` defaults to the bucket total."""
        dense = _dense(buckets)
        return cls(
            dense, int(dense.sum()) if count is None else int(count), None if sum_ns is None else int(sum_ns)
        )

    @classmethod
    def from_entry(cls, entry: Mapping | None) -> Histogram:
        """Build from a snapshot hop / e2e entry ({"count", "sum_ns", "buckets"}); None gives an empty one."""
        if not entry:
            return cls()
        return cls.from_sparse(entry.get("buckets"), entry.get("count"), entry.get("sum_ns"))

    @classmethod
    def from_values(cls, values_ns: Iterable[int]) -> Histogram:
        """Record exact values the way the kernel would (for tests and synthetic fixtures)."""
        v = np.asarray(
            list(values_ns) if not isinstance(values_ns, np.ndarray) else values_ns, dtype=np.int64
        )
        dense = np.bincount(bucket_indices(v), minlength=HIST_BUCKETS).astype(np.int64)
        return cls(dense, int(v.size), int(v.sum()))

    def add(self, v_ns: int, n: int = 1) -> None:
        """Record `n` packets of latency `v_ns` in place."""
        self.buckets[bucket_index(v_ns)] += n
        self.count += n
        if self.sum_ns is not None:
            self.sum_ns += int(v_ns) * n

    def merge(self, other: Histogram) -> Histogram:
        """A new histogram holding both (e.g. per-CPU copies, or one hop over several snapshots)."""
        s = None if self.sum_ns is None or other.sum_ns is None else self.sum_ns + other.sum_ns
        return Histogram(self.buckets + other.buckets, self.count + other.count, s)

    __add__ = merge

    @property
    def total(self) -> int:
        """Packets in the buckets (what percentiles are computed over)."""
        return int(self.buckets.sum())

    @property
    def empty(self) -> bool:
        return self.total == 0 and self.count == 0

    @property
    def mean(self) -> float:
        """Mean latency in ns: exact sum_ns / count; NaN when empty."""
        if self.sum_ns is not None and self.count > 0:
            return self.sum_ns / self.count
        total = self.total
        if total == 0:
            return math.nan
        lows, highs = _bounds()
        mid = (lows + (highs - 1)) / 2
        return float((self.buckets * mid).sum() / total)

    def percentile(self, p: float) -> float:
        """The p-th percentile (0..100) in ns, NaN when empty.

        Inside the bucket that holds the rank the value is interpolated linearly over the integers the bucket
        can hold (low .. high-1), so the answer never leaves the bucket and is exact for the 1 ns buckets.
        """
        if not 0 <= p <= 100:
            raise ValueError(f"percentile must be within 0..100, got {p}")
        total = self.total
        if total == 0:
            return math.nan
        cum = np.cumsum(self.buckets)
        lows, highs = _bounds()
        rank = p / 100.0 * total
        if rank <= 0:
            i = int(np.flatnonzero(self.buckets)[0])
            return float(lows[i])
        i = int(np.searchsorted(cum, rank, side="left"))
        i = min(i, HIST_BUCKETS - 1)
        before = float(cum[i - 1]) if i > 0 else 0.0
        frac = (rank - before) / float(self.buckets[i])
        low, top = lows[i], highs[i] - 1
        return float(min(max(low + frac * (top - low), low), top))

    def percentiles(self, ps: Iterable[float]) -> dict[float, float]:
        return {p: self.percentile(p) for p in ps}

    def to_sparse(self) -> dict[str, int]:
        """The snapshot's sparse form, JSON-ready."""
        return {str(int(i)): int(self.buckets[i]) for i in np.flatnonzero(self.buckets)}

    def to_entry(self) -> dict:
        """{"count", "sum_ns", "buckets"} as found in a snapshot."""
        return {"count": int(self.count), "sum_ns": self.sum_ns, "buckets": self.to_sparse()}


def merge_all(hists: Iterable[Histogram]) -> Histogram:
    """Sum any number of histograms (an empty iterable gives an empty histogram)."""
    out = Histogram()
    for h in hists:
        out = out.merge(h)
    return out
