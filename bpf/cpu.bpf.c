// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* CPU cost of the datapath: cpu-clock samples with stacks, and the time each CPU spends in each softirq.
 *
 * on_cpu_sample runs on every cpu-clock tick of every CPU (user space opens one perf event per CPU and attaches
 * it). It records the interrupted context's kernel stack (and the task's user stack) in STACK_TRACE maps and
 * bumps a counter per (process, thread name, cpu, softirq, kstack, ustack): aggregation stays in the kernel,
 * nothing per sample crosses to user space. Symbolization and charging stacks to components happen in user space.
 *
 * on_softirq_entry/exit keep, per CPU, the vector being run and when it started, so that (a) a sample knows
 * whether it interrupted a softirq handler, which a perf_event program cannot tell from its registers, and
 * (b) the time per vector per CPU adds up (NET_RX/NET_TX saturation). Softirqs do not nest on a CPU, so one
 * slot per CPU is enough. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "cpu.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

const volatile struct cpu_cfg cfg = {};

#ifndef EEXIST
#define EEXIST 17
#endif
#ifndef EFAULT
#define EFAULT 14
#endif

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, CPU_KSTACK_ENTRIES);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, CPU_MAX_DEPTH * sizeof(__u64));
} kstacks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, CPU_USTACK_ENTRIES);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, CPU_USER_DEPTH * sizeof(__u64));
} ustacks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, CPU_MAX_KEYS);
	__type(key, struct cpu_key);
	__type(value, struct cpu_val);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CPU_NR_SOFTIRQS);
	__type(key, __u32);
	__type(value, struct softirq_stat);
} softirqs SEC(".maps");

struct softirq_now {
	__u64 start_ns;
	__u32 vec1; /* vector + 1 of the handler running now, 0 = none */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct softirq_now);
} softirq_now SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CPU_C_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} cpu_counters SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *c = bpf_map_lookup_elem(&cpu_counters, &which);

	if (c)
		*c += 1;
}

SEC("perf_event")
int on_cpu_sample(struct bpf_perf_event_data *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 zero = 0;
	struct softirq_now *now = bpf_map_lookup_elem(&softirq_now, &zero);
	struct cpu_key key = {};
	struct cpu_val *val, init = {};

	count(CPU_C_SAMPLES);
	key.tgid = id >> 32;
	key.cpu = bpf_get_smp_processor_id();
	key.softirq = now ? now->vec1 : 0;
	key.kstack = bpf_get_stackid(ctx, &kstacks, 0);
	if (key.kstack < 0 && key.kstack != -EFAULT)
		count(CPU_C_KSTACK_LOST);
	key.ustack = -EFAULT;
	if (cfg.user_stacks && key.tgid) {
		key.ustack = bpf_get_stackid(ctx, &ustacks, BPF_F_USER_STACK);
		if (key.ustack < 0 && key.ustack != -EFAULT)
			count(CPU_C_USTACK_LOST);
	}
	bpf_get_current_comm(key.comm, sizeof(key.comm));

	val = bpf_map_lookup_elem(&counts, &key);
	if (!val) {
		/* -EEXIST when another CPU inserted the same key first: fine, the lookup below finds it */
		bpf_map_update_elem(&counts, &key, &init, BPF_NOEXIST);
		val = bpf_map_lookup_elem(&counts, &key);
		if (!val) {
			count(CPU_C_KEYS_FULL);
			return 0;
		}
	}
	__sync_fetch_and_add(&val->count, 1);
	__sync_fetch_and_add(&val->period_ns, ctx->sample_period);
	return 0;
}

SEC("tp_btf/softirq_entry")
int BPF_PROG(on_softirq_entry, unsigned int vec_nr)
{
	__u32 zero = 0;
	struct softirq_now *now = bpf_map_lookup_elem(&softirq_now, &zero);

	if (!now)
		return 0;
	now->start_ns = bpf_ktime_get_ns();
	now->vec1 = vec_nr + 1;
	return 0;
}

SEC("tp_btf/softirq_exit")
int BPF_PROG(on_softirq_exit, unsigned int vec_nr)
{
	__u32 zero = 0, vec = vec_nr;
	struct softirq_now *now = bpf_map_lookup_elem(&softirq_now, &zero);
	struct softirq_stat *st;

	if (!now)
		return 0;
	if (now->vec1 != vec + 1 || !now->start_ns) {
		count(CPU_C_SOFTIRQ_ORPHAN);
		now->vec1 = 0;
		return 0;
	}
	st = bpf_map_lookup_elem(&softirqs, &vec);
	if (st) {
		st->count += 1;
		st->time_ns += bpf_ktime_get_ns() - now->start_ns;
	}
	now->vec1 = 0;
	now->start_ns = 0;
	return 0;
}
