// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Calibration programs for `cniprof doctor` (cniprof/bpf/features.py): one tiny program per attach type.
 *
 * Each program only bumps its own counter, so what the probe learns is whether the kernel *loads and attaches*
 * that kind of program at that place, not whether some logic verifies. User space loads them one at a time
 * (autoload off for all others), because one program the kernel refuses makes bpf_object__load fail for the
 * whole object. The attach points are the ones cniprof's real probes use (net:netif_rx, ip_rcv) so a success
 * here means the real thing can attach too. Compiles for x86 and arm64 (BPF_KPROBE needs __TARGET_ARCH_*).
 * Program names start with cpd_ (cniprof doctor) so a leftover is easy to spot in `bpftool prog show`. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

enum feature_slot {
	SLOT_TRACEPOINT,
	SLOT_RAW_TP,
	SLOT_TP_BTF,
	SLOT_FENTRY,
	SLOT_KPROBE,
	SLOT_PERF_EVENT,
	SLOT_COUNT,
};

/* How often each program ran (in .bss; user space may read it to see a program fire). */
__u64 hits[SLOT_COUNT] = {};

static __always_inline int bump(int slot)
{
	if (slot >= 0 && slot < SLOT_COUNT)
		__sync_fetch_and_add(&hits[slot], 1);
	return 0;
}

/* Classic tracepoint through perf_event_open: needs tracefs for the event id. */
SEC("tracepoint/net/netif_rx")
int cpd_tracepoint(void *ctx)
{
	return bump(SLOT_TRACEPOINT);
}

/* Raw tracepoint by name (BPF_RAW_TRACEPOINT_OPEN, kernel >= 4.17): untyped u64 arguments. */
SEC("raw_tp/netif_rx")
int cpd_raw_tp(struct bpf_raw_tracepoint_args *ctx)
{
	return bump(SLOT_RAW_TP);
}

/* BTF-typed tracepoint (kernel >= 5.5): what cniprof's hop tracker (bpf/hops.bpf.c) uses. */
SEC("tp_btf/netif_rx")
int BPF_PROG(cpd_tp_btf, struct sk_buff *skb)
{
	return bump(SLOT_TP_BTF);
}

/* fentry on a kernel function (BPF trampoline): the finer points such as br_handle_frame, vxlan_xmit. */
SEC("fentry/ip_rcv")
int BPF_PROG(cpd_fentry, struct sk_buff *skb)
{
	return bump(SLOT_FENTRY);
}

/* kprobe fallback for the same finer points on kernels without trampolines. No arguments are named: on arm64,
 * PT_REGS_PARM1 casts to struct user_pt_regs, which an x86-generated vmlinux.h does not define. */
SEC("kprobe/ip_rcv")
int BPF_KPROBE(cpd_kprobe)
{
	return bump(SLOT_KPROBE);
}

/* cpu-clock sampling for the CPU cost per hop; attached to a perf event fd opened by user space. */
SEC("perf_event")
int cpd_perf_event(struct bpf_perf_event_data *ctx)
{
	return bump(SLOT_PERF_EVENT);
}
