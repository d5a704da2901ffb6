/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* The ABI between bpf/cpu.bpf.c and cniprof/probes/cpu.py: fixed-width types only, never vmlinux.h.
 * cniprof/probes/cpu_abi.py mirrors these structs; tests/root/test_cpu_abi.py checks both against the object's
 * BTF for x86 and arm64. */
#ifndef CNIPROF_CPU_H
#define CNIPROF_CPU_H

#define CPU_MAX_DEPTH 127        /* kernel frames per stack: the kernel's default kernel.perf_event_max_stack */
#define CPU_USER_DEPTH 32        /* user frames per stack (innermost kept) */
#define CPU_KSTACK_ENTRIES 32768 /* distinct kernel stacks: a new stack hashing to a taken bucket is lost
                                  * (-EEXIST), so the table is kept sparse (~34 MB while a capture runs) */
#define CPU_USTACK_ENTRIES 16384 /* distinct user stacks, in their own map: walks of code built without frame
                                  * pointers produce junk callers that must not crowd out kernel stacks */
#define CPU_MAX_KEYS 32768      /* distinct (task, cpu, softirq, kstack, ustack) keys */
#define CPU_NR_SOFTIRQS 10      /* NR_SOFTIRQS; vec 2 = NET_TX, 3 = NET_RX */
#define CPU_COMM_LEN 16

/* One aggregation key per sample. softirq: 0 = the sample was not taken inside a softirq handler, else the
 * vector + 1 (from the softirq_entry/exit tracepoints, so it also covers softirqs run on the idle task or in
 * ksoftirqd). kstack/ustack: an id in the kstacks/ustacks map, or a negative errno (-EFAULT: no such stack, e.g. a
 * user-mode sample has no kernel stack; -EEXIST: hash collision with another stack, the sample lost its stack). */
struct cpu_key {
	__u32 tgid;
	__u32 cpu;
	__u32 softirq;
	__s32 kstack;
	__s32 ustack;
	__u32 pad;
	char comm[CPU_COMM_LEN]; /* of the thread */
};

struct cpu_val {
	__u64 count;     /* samples */
	__u64 period_ns; /* sum of the sampling periods: CPU time these samples stand for */
};

/* per CPU (a PERCPU_ARRAY indexed by softirq vector) */
struct softirq_stat {
	__u64 count;   /* handler runs that ended in the capture */
	__u64 time_ns; /* time between softirq_entry and softirq_exit */
};

/* settings, written into .rodata before load (the only variable there) */
struct cpu_cfg {
	__u32 user_stacks; /* 1: also record user stacks (frame-pointer walk of the task's user registers) */
	__u32 pad;
};

enum cpu_counter {
	CPU_C_SAMPLES = 0,      /* perf_event program runs */
	CPU_C_KSTACK_LOST = 1,  /* kernel stack not recorded (collision or map full) */
	CPU_C_USTACK_LOST = 2,  /* user stack not recorded (collision or map full) */
	CPU_C_KEYS_FULL = 3,    /* sample dropped: the counts map was full */
	CPU_C_SOFTIRQ_ORPHAN = 4, /* softirq_exit without a matching entry (capture began inside a handler) */
	CPU_C_COUNT = 8,
};

#endif
