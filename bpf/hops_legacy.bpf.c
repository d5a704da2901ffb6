// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* The hop probe for kernels before 5.12, which refuse BPF atomics (BPF_CMPXCHG) when the object loads, even in
 * code a constant makes dead: the same programs with a plain compare and store where a slot changes hands
 * (cniprof/probes/hops.py picks this object by the kernel's version). */
#define HOPS_NO_ATOMICS 1
#include "hops.bpf.c"
