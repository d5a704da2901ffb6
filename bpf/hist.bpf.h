/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* The log-linear bucket maths shared by every cniprof program that keeps latency histograms (hops, nfhooks).
 *
 * One copy, because cniprof/analysis/histogram.py reads every program's buckets with the same formula
 * (ARCHITECTURE.md, "Histogram buckets"): two drifting copies would silently shift percentiles. The constants
 * and struct hist stay in hops.h, where tests/root/test_hops_abi.py pins them against the Python mirror. */
#ifndef CNIPROF_HIST_BPF_H
#define CNIPROF_HIST_BPF_H

#include "hops.h"

static __always_inline __u32 log2_u64(__u64 v)
{
	__u32 r, shift;

	r = (v > 0xFFFFFFFFULL) << 5; v >>= r;
	shift = (v > 0xFFFF) << 4; v >>= shift; r |= shift;
	shift = (v > 0xFF) << 3; v >>= shift; r |= shift;
	shift = (v > 0xF) << 2; v >>= shift; r |= shift;
	shift = (v > 0x3) << 1; v >>= shift; r |= shift;
	r |= (v >> 1);
	return r;
}

static __always_inline __u32 bucket_of(__u64 v)
{
	__u32 e, idx;

	if (v < HIST_SUB)
		return v;
	e = log2_u64(v);
	idx = (e - HIST_SUB_BITS + 1) * HIST_SUB + ((v >> (e - HIST_SUB_BITS)) & (HIST_SUB - 1));
	return idx < HIST_BUCKETS ? idx : HIST_BUCKETS - 1;
}

/* One value into a histogram (per-CPU map value: plain adds). */
static __always_inline void hist_record(struct hist *h, __u64 delta)
{
	__u32 b = bucket_of(delta);

	h->count += 1;
	h->sum_ns += delta;
	if (b < HIST_BUCKETS)
		h->buckets[b] += 1;
}

#endif
