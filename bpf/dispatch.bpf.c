// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Calibration of what a BPF program on a tracepoint costs around its body (cniprof/probes/duty.py).
 *
 * The kernel's run-time statistics count a program's body only, not the tracepoint dispatch that calls it (the
 * probe array walk, RCU, the recursion check, the statistics' own clock reads). This program sits on task_rename,
 * which user space fires at will with prctl(PR_SET_NAME) on its own thread: timing a burst of renames with and
 * without it attached gives the whole per-event price, and its run-time statistics the body's share. Its body is
 * one per-CPU counter increment, the least any hop program does. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} renames SEC(".maps");

SEC("tp_btf/task_rename")
int BPF_PROG(on_task_rename, struct task_struct *task, const char *comm)
{
	__u32 zero = 0;
	__u64 *c = bpf_map_lookup_elem(&renames, &zero);

	if (c)
		*c += 1;
	return 0;
}
