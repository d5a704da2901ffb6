// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Netfilter cost per IPv4 hook, without kprobes: two BPF_PROG_TYPE_NETFILTER programs per hook and namespace.
 *
 * nf_first is linked at NF_IP_PRI_FIRST + 1 and nf_last at NF_IP_PRI_LAST - 1 of each hook (the two extremes
 * are reserved by the kernel), so every iptables/nftables chain, conntrack and NAT registered on the hook runs
 * between them. nf_first stamps (skb, time) for packets of the chosen addresses; nf_last, when it sees the same
 * skb, adds the elapsed time to the (netns, hook) histogram. A packet dropped or stolen inside the hook never
 * reaches nf_last: its stamp stays, and is counted as "unclosed" when the next stamp needs the slot (user space
 * adds the stamps still pending when it reads). Both programs always return NF_ACCEPT: traffic is never changed.
 *
 * Links, not the programs, know their namespace and hook; the programs read both from the hook state, and map
 * the namespace inode to the small index user space assigned. Only plain and per-CPU arrays on the hot path.
 * No arch-specific code (no PT_REGS): one object serves x86_64 and arm64. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "hist.bpf.h"
#include "nfhooks.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define NF_ACCEPT 1 /* uapi linux/netfilter.h, a macro: not in BTF */

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nf_netns);
} netns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nf_filter);
} filter SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nf_stamps);
} stamps SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NF_SLOTS);
	__type(key, __u32);
	__type(value, struct hist);
} hists SEC(".maps");

/* stamps overwritten before their packet reached nf_last: dropped or stolen inside the hook */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NF_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} unclosed SEC(".maps");

/* iph: the packet's IPv4 header (IPv4 hooks: the network header) */
static __always_inline int wanted(const void *iph)
{
	__u32 zero = 0, addrs[2], i;
	struct nf_filter *f = bpf_map_lookup_elem(&filter, &zero);

	if (!f)
		return 0;
	if (f->count == 0)
		return 1;
	/* saddr and daddr are bytes 12..19 of the IPv4 header */
	if (bpf_probe_read_kernel(addrs, sizeof(addrs), iph + 12))
		return 0;
	for (i = 0; i < NF_MAX_ADDRS; i++) {
		if (i >= f->count)
			break;
		if (f->addr[i] == addrs[0] || f->addr[i] == addrs[1])
			return 1;
	}
	return 0;
}

static __always_inline int netns_index(__u32 ino)
{
	__u32 zero = 0, i;
	struct nf_netns *n = bpf_map_lookup_elem(&netns, &zero);

	if (!n)
		return -1;
	for (i = 0; i < NF_MAX_NETNS; i++) {
		if (i >= n->count)
			break;
		if (n->ino[i] == ino)
			return i;
	}
	return -1;
}

/* The skb's address as a number. The verifier forbids arithmetic on a trusted (BTF) skb pointer (the hash); a
 * value read back from map memory is a plain scalar, so the pointer takes a round trip through the per-CPU
 * scratch word (as in hops.bpf.c). A kprobe's argument is a scalar already. */
static __always_inline __u64 addr_of(const void *p)
{
	__u32 zero = 0;
	struct nf_stamps *st = bpf_map_lookup_elem(&stamps, &zero);

	if (!st)
		return 0;
	*(volatile __u64 *)&st->scratch = (__u64)p;
	return *(volatile __u64 *)&st->scratch;
}

/* The stamp slot of the skb at addr in hook on this CPU. */
static __always_inline struct nf_stamp *stamp_of(__u64 addr, __u32 hook)
{
	__u32 zero = 0, slot;
	struct nf_stamps *st = bpf_map_lookup_elem(&stamps, &zero);

	if (!st || !addr)
		return 0;
	slot = hook * NF_STAMP_WAYS + NF_STAMP_HASH(addr);
	asm volatile("" : "+r"(slot)); /* keep the bound check: clang folds it into an OR the verifier cannot bound */
	if (slot >= NF_HOOKS * NF_STAMP_WAYS)
		return 0;
	return &st->s[slot];
}

/* A packet (skb address, IPv4 header) enters a hook's chains (netns of the hook, hook number): stamp it.
 * Returns whether it was stamped. */
static __always_inline int enter(__u64 addr, const void *iph, __u32 hook, __u32 netns_ino)
{
	struct nf_stamp *s;
	__u32 slot;
	__u64 *n;
	int idx;

	if (hook >= NF_HOOKS || !wanted(iph))
		return 0;
	idx = netns_index(netns_ino);
	if (idx < 0)
		return 0;
	s = stamp_of(addr, hook);
	if (!s)
		return 0;
	if (s->skb) {
		/* a packet entered this hook on this CPU and never left it: dropped or stolen there */
		slot = (s->netns_idx % NF_MAX_NETNS) * NF_HOOKS + hook;
		n = bpf_map_lookup_elem(&unclosed, &slot);
		if (n)
			*n += 1;
	}
	s->skb = addr;
	s->netns_idx = idx;
	s->ts = bpf_ktime_get_ns();
	return 1;
}

/* The packet left the hook's chains accepted: the time since its stamp is the hook's cost for it. */
static __always_inline void leave(__u64 addr, __u32 hook)
{
	struct nf_stamp *s;
	struct hist *h;
	__u32 slot;
	__u64 delta;

	if (hook >= NF_HOOKS)
		return;
	s = stamp_of(addr, hook);
	if (!s || s->skb != addr)
		return;
	delta = bpf_ktime_get_ns() - s->ts;
	s->skb = 0;
	slot = (s->netns_idx % NF_MAX_NETNS) * NF_HOOKS + hook;
	h = bpf_map_lookup_elem(&hists, &slot);
	if (h)
		hist_record(h, delta);
}

/* nf_hook_slow returned 0: a hook function stole (or queued) the packet. The one that does so on every bridged
 * packet is br_netfilter's ip_sabotage_in at NF_IP_PRI_FIRST (INT_MIN) of PREROUTING: on the packet's second
 * PREROUTING walk (ip_rcv, after the bridge already ran the IPv4 hooks) it calls the rest of the stack (FORWARD,
 * POSTROUTING, the tunnel, the next device) inside the hook and returns NF_STOLEN. Links at INT_MIN+1 never see
 * that walk; timing it here would charge the whole forwarding path to PREROUTING. So the stamp is dropped,
 * neither timed nor unclosed, which is what the links report for it. */
static __always_inline void discard(__u64 addr, __u32 hook)
{
	struct nf_stamp *s;

	if (hook >= NF_HOOKS)
		return;
	s = stamp_of(addr, hook);
	if (s && s->skb == addr)
		s->skb = 0;
}

/* Netfilter links (Linux 6.4+): the first and the last priority of each hook bracket every chain there. */
SEC("netfilter")
int nf_first(struct bpf_nf_ctx *ctx)
{
	const struct nf_hook_state *state = ctx->state;
	struct sk_buff *skb = ctx->skb;

	enter(addr_of(skb), skb->head + skb->network_header, state->hook, state->net->ns.inum);
	return NF_ACCEPT;
}

SEC("netfilter")
int nf_last(struct bpf_nf_ctx *ctx)
{
	leave(addr_of(ctx->skb), ctx->state->hook);
	return NF_ACCEPT;
}

/* Fallback where links are refused but fentry is allowed: nf_hook_slow runs every hook function of one hook
 * for one packet, so entry and exit bracket the same chains, plus the ones at the two extreme priorities that
 * links cannot bracket (conntrack confirm at INT_MAX, br_netfilter's sabotage at INT_MIN). It returns 1 when
 * every hook function accepted the packet (timed), a negative error when one dropped it (the stamp stays and
 * is counted as unclosed, as with links), 0 when one stole it (see discard()). (Not loadable on kernels that
 * refuse fentry, e.g. our CI machines.) NFPROTO_IPV4 comes from vmlinux.h. */
SEC("fentry/nf_hook_slow")
int BPF_PROG(nf_slow_enter, struct sk_buff *skb, struct nf_hook_state *state)
{
	if (state->pf == NFPROTO_IPV4)
		enter(addr_of(skb), skb->head + skb->network_header, state->hook, state->net->ns.inum);
	return 0;
}

SEC("fexit/nf_hook_slow")
int BPF_PROG(nf_slow_exit, struct sk_buff *skb, struct nf_hook_state *state, const struct nf_hook_entries *e,
	     unsigned int s, int ret)
{
	if (state->pf != NFPROTO_IPV4)
		return 0;
	if (ret > 0)
		leave(addr_of(skb), state->hook);
	else if (ret == 0)
		discard(addr_of(skb), state->hook);
	return 0;
}

/* Fallback where neither links nor fentry are allowed (arm64 before 6.4: no DYNAMIC_FTRACE_WITH_DIRECT_CALLS,
 * fentry attach ENOTSUPP): kprobe and kretprobe on nf_hook_slow. The return probe sees only the return value,
 * so the entry pushes (skb, hook) on a per-CPU stack for every call, stamped or not, and the return pops it:
 * calls nest (the sabotaged PREROUTING walk runs FORWARD and POSTROUTING inside it; a softirq can interrupt an
 * OUTPUT traversal) and return in reverse order on one CPU. A return the kernel skips (more calls in flight
 * than the kretprobe's maxactive: user space asks for enough through a tracefs event, see
 * cniprof/bpf/kretprobe.py) leaves its frame behind; frames that fill the stack are such leftovers, and the
 * stack starts over. Arguments are plain numbers here: every field is read with BPF_CORE_READ. */
#define NF_KP_DEPTH 8

struct nf_frame {
	__u64 skb;  /* 0 = this call stamped nothing */
	__u32 hook;
	__u32 pad;
};

struct nf_frames {
	__u32 depth;  /* calls entered and not returned on this CPU (at most NF_KP_DEPTH) */
	__u32 pad;
	struct nf_frame f[NF_KP_DEPTH];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nf_frames);
} frames SEC(".maps");

#if defined(__TARGET_ARCH_arm64)
/* what bpf_tracing.h's PT_REGS_PARM* read on arm64 (uapi asm/ptrace.h); vmlinux.h is generated on x86 */
struct user_pt_regs {
	__u64 regs[31];
	__u64 sp;
	__u64 pc;
	__u64 pstate;
};
#endif

SEC("kprobe/nf_hook_slow")
int BPF_KPROBE(nf_kp_enter, struct sk_buff *skb, struct nf_hook_state *state)
{
	__u32 zero = 0, d, hook;
	struct nf_frames *fr = bpf_map_lookup_elem(&frames, &zero);
	struct nf_frame *f;
	const void *iph;

	if (!fr)
		return 0;
	d = fr->depth;
	if (d >= NF_KP_DEPTH)
		d = 0; /* only missed returns nest this deep: start over (the calls still in flight go untimed) */
	fr->depth = d + 1;
	asm volatile("" : "+r"(d));
	if (d >= NF_KP_DEPTH)
		return 0;
	f = &fr->f[d];
	f->skb = 0;
	if (BPF_CORE_READ(state, pf) != NFPROTO_IPV4)
		return 0;
	hook = BPF_CORE_READ(state, hook);
	iph = BPF_CORE_READ(skb, head) + BPF_CORE_READ(skb, network_header);
	if (enter((__u64)skb, iph, hook, BPF_CORE_READ(state, net, ns.inum))) {
		f->skb = (__u64)skb;
		f->hook = hook;
	}
	return 0;
}

SEC("kretprobe/nf_hook_slow")
int BPF_KRETPROBE(nf_kp_exit, int ret)
{
	__u32 zero = 0, d;
	struct nf_frames *fr = bpf_map_lookup_elem(&frames, &zero);
	struct nf_frame *f;

	if (!fr || fr->depth == 0)
		return 0;
	d = --fr->depth;
	if (d >= NF_KP_DEPTH)
		return 0;
	f = &fr->f[d];
	if (!f->skb)
		return 0;
	if (ret > 0)
		leave(f->skb, f->hook);
	else if (ret == 0)
		discard(f->skb, f->hook);
	return 0;
}
