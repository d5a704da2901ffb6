# SPDX-License-Identifier: Apache-2.0
"""The log-linear bucket maths against ARCHITECTURE.md, and percentiles/means/merging of Histogram."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cniprof.analysis.histogram import (
    HIST_BUCKETS,
    Histogram,
    bucket_bounds,
    bucket_index,
    bucket_indices,
    merge_all,
)


def spec_index(v: int) -> int:
    """The formula exactly as written in ARCHITECTURE.md, independent of the implementation."""
    if v < 16:
        return v
    e = math.floor(math.log2(v)) if v < 2**40 else v.bit_length() - 1
    return min((e - 3) * 16 + ((v >> (e - 4)) & 15), 511)


def spec_lower(idx: int) -> int:
    return idx if idx < 16 else (16 + idx % 16) << (idx // 16 - 1)


def sample_values(n: int = 200_000, seed: int = 1) -> np.ndarray:
    """Log-uniform over 0 .. 2^36 ns plus every small value and the powers of two and their neighbours."""
    rng = np.random.default_rng(seed)
    logs = rng.uniform(0, 36, n)
    edges = [x for k in range(36) for x in (2**k - 1, 2**k, 2**k + 1)]
    return np.concatenate([np.arange(64), np.array(edges), (2.0**logs).astype(np.int64)])


@pytest.mark.parametrize(
    ("v", "idx"),
    [
        (0, 0),
        (1, 1),
        (15, 15),
        (16, 16),
        (31, 31),
        (32, 32),
        (33, 32),
        (34, 33),
        (1000, 111),
        (1023, 111),
        (1024, 112),
        (2**35 - 1, 511),
        (2**35, 511),
        (2**50, 511),
    ],
)
def test_known_indices(v: int, idx: int) -> None:
    assert bucket_index(v) == idx
    assert spec_index(v) == idx


def test_index_and_bounds_follow_the_spec() -> None:
    for v in sample_values(20_000):
        assert bucket_index(int(v)) == spec_index(int(v))
    for idx in range(HIST_BUCKETS):
        assert bucket_bounds(idx)[0] == spec_lower(idx)


def test_round_trip_value_lies_in_its_bucket() -> None:
    values = sample_values()
    idx = bucket_indices(values)
    assert np.array_equal(idx, [bucket_index(int(v)) for v in values[:5000]] + list(idx[5000:]))
    for v, i in zip(values.tolist(), idx.tolist()):
        low, high = bucket_bounds(i)
        if i < HIST_BUCKETS - 1:
            assert low <= v < high
            if v >= 16:
                assert (high - low) / v <= 0.0625
        else:  # the last bucket is open-ended
            assert v >= low


def test_vectorised_index_equals_scalar() -> None:
    values = sample_values(50_000, seed=7)
    assert bucket_indices(values).tolist() == [bucket_index(int(v)) for v in values]


def test_buckets_are_contiguous_and_narrow() -> None:
    for idx in range(HIST_BUCKETS - 1):
        low, high = bucket_bounds(idx)
        assert high == bucket_bounds(idx + 1)[0]
        assert (high - low) / max(low, 1) <= 0.0625 or low < 16
    assert bucket_bounds(HIST_BUCKETS - 1) == (31 << 30, 1 << 35)


def test_out_of_range_is_rejected() -> None:
    with pytest.raises(ValueError):
        bucket_index(-1)
    with pytest.raises(ValueError):
        bucket_bounds(HIST_BUCKETS)
    with pytest.raises(ValueError):
        Histogram.from_sparse({"512": 1})
    with pytest.raises(ValueError):
        Histogram.from_values([1]).percentile(101)


@pytest.mark.parametrize("dist", ["uniform", "lognormal", "bimodal"])
def test_percentiles_within_resolution(dist: str) -> None:
    rng = np.random.default_rng(42)
    if dist == "uniform":
        v = rng.integers(1_000, 100_000, 100_000)
    elif dist == "lognormal":
        v = rng.lognormal(np.log(5_000), 0.8, 100_000).astype(np.int64)
    else:
        v = np.concatenate([rng.integers(900, 1_100, 90_000), rng.integers(40_000, 60_000, 10_000)])
    h = Histogram.from_values(v)
    for p in (1, 10, 50, 90, 95, 99, 99.9):
        exact = float(np.percentile(v, p, method="inverted_cdf"))  # a real sample, not a value in a gap
        assert abs(h.percentile(p) - exact) / exact <= 0.0625, (p, h.percentile(p), exact)


def test_percentile_is_clamped_to_its_bucket() -> None:
    h = Histogram.from_values([1000] * 10)
    low, high = bucket_bounds(bucket_index(1000))
    for p in (0, 1, 50, 99, 100):
        assert low <= h.percentile(p) <= high - 1


def test_small_values_are_exact() -> None:
    h = Histogram.from_values([7] * 5 + [9] * 5)
    assert h.percentile(0) == 7
    assert h.percentile(50) == 7
    assert h.percentile(51) == 9
    assert h.percentile(100) == 9


def test_mean_is_exact_from_sum_and_count() -> None:
    v = [123, 4_567, 89_012, 3_456_789]
    h = Histogram.from_values(v)
    assert h.mean == sum(v) / len(v)
    assert h.count == 4 and h.sum_ns == sum(v)


def test_kernel_count_and_sum_win_over_buckets_for_the_mean() -> None:
    # a snapshot read while packets flow: count/sum one packet ahead of the buckets
    h = Histogram.from_sparse({"111": 9}, count=10, sum_ns=10_000)
    assert h.mean == 1000.0
    assert h.total == 9
    assert bucket_bounds(111)[0] <= h.percentile(50) < bucket_bounds(111)[1]


def test_count_and_sum_without_buckets() -> None:
    # how the kernel reports pairs off the chain: exact count and sum, no histogram
    h = Histogram.from_entry({"count": 7, "sum_ns": 22_483, "buckets": {}})
    assert not h.empty
    assert h.mean == 22_483 / 7
    assert math.isnan(h.percentile(50))


def test_mean_falls_back_to_midpoints_without_sum() -> None:
    h = Histogram.from_sparse({"5": 1, "111": 1})
    assert h.sum_ns is None
    assert h.mean == pytest.approx((5 + (992 + 1023) / 2) / 2)


def test_sparse_round_trip() -> None:
    h = Histogram.from_values([3, 3, 1000, 70_000])
    sparse = h.to_sparse()
    assert sparse == {"3": 2, "111": 1, str(bucket_index(70_000)): 1}
    again = Histogram.from_entry(h.to_entry())
    assert np.array_equal(again.buckets, h.buckets)
    assert (again.count, again.sum_ns) == (h.count, h.sum_ns)
    assert np.array_equal(Histogram.from_sparse({3: 2}).buckets, Histogram.from_sparse({"3": 2}).buckets)


def test_merge_equals_histogram_of_the_union() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 10**7, 5000), rng.integers(0, 10**5, 3000)
    merged = Histogram.from_values(a).merge(Histogram.from_values(b))
    union = Histogram.from_values(np.concatenate([a, b]))
    assert np.array_equal(merged.buckets, union.buckets)
    assert (merged.count, merged.sum_ns) == (union.count, union.sum_ns)
    summed = Histogram.from_values(a) + Histogram.from_values(b)
    assert np.array_equal(summed.buckets, union.buckets)
    assert np.array_equal(
        merge_all([Histogram.from_values(a), Histogram.from_values(b)]).buckets, union.buckets
    )


def test_merge_does_not_mutate_and_add_does() -> None:
    a = Histogram.from_values([100])
    b = Histogram.from_values([200])
    a.merge(b)
    assert a.count == 1
    a.add(300, n=2)
    assert (a.count, a.sum_ns, a.total) == (3, 700, 3)


def test_empty_histograms() -> None:
    for h in (Histogram(), Histogram.from_sparse({}), Histogram.from_entry(None), merge_all([])):
        assert h.empty and h.total == 0 and h.count == 0
        assert math.isnan(h.mean)
        assert math.isnan(h.percentile(50))
        assert h.to_sparse() == {}
    full = Histogram.from_values([500, 600])
    merged = Histogram().merge(full)
    assert np.array_equal(merged.buckets, full.buckets) and merged.mean == full.mean
