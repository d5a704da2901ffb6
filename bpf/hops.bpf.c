// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Per-hop latency of the packets of chosen flows along a CNI datapath.
 *
 * Every tracked skb holds (first time, last time, last point) in a slot keyed by its address. Each time it passes
 * a registered point, the time since its previous point goes into the histogram of that (from, to) pair; nothing
 * per packet crosses to user space. Points are (event, netns, ifindex) mapped to small ids by user space, so the
 * hot path never touches a string.
 *
 * Cost matters more than anything else here (these programs run for every packet on the node): every map on the
 * hot path is a plain or per-CPU array, whose lookups the verifier inlines into a bounds check and an address
 * computation, and the clock is read only for packets that are tracked. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "hops.h"
#include "hist.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

const volatile struct hops_cfg cfg = {};

#define ETH_P_IP 0x0800

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DEV_SLOTS);
	__type(key, __u32);
	__type(value, struct dev_slot);
} devs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hops_settings);
} settings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_POINTS);
	__type(key, __u32);
	__type(value, struct point_info);
} point_info SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TRACK_SLOTS);
	__type(key, __u32);
	__type(value, struct skb_track);
} tracks SEC(".maps");

/* (from * MAX_POINTS + to) -> histogram slot; 0 = not an expected pair */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_POINTS * MAX_POINTS);
	__type(key, __u32);
	__type(value, __u32);
} pair_slot SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HIST_SLOTS);
	__type(key, __u32);
	__type(value, struct hist);
} hists SEC(".maps");

/* pairs that are not in the expected chain: count and time only (rare by construction) */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct pair_stat);
} odd_pairs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 1024);
	__type(key, struct drop_key);
	__type(value, __u64);
} drops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, C_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *c = bpf_map_lookup_elem(&counters, &which);

	if (c)
		*c += 1;
}

static __always_inline void hist_add(__u32 slot, __u64 delta)
{
	struct hist *h = bpf_map_lookup_elem(&hists, &slot);

	if (h)
		hist_record(h, delta);
}

static __always_inline void hop(__u32 from, __u32 to, __u64 delta)
{
	__u32 pair = (from & (MAX_POINTS - 1)) * MAX_POINTS + (to & (MAX_POINTS - 1));
	__u32 *slot = bpf_map_lookup_elem(&pair_slot, &pair);
	struct pair_stat *ps, init = {};

	if (slot && *slot) {
		hist_add(*slot, delta);
		return;
	}
	count(C_UNEXPECTED);
	ps = bpf_map_lookup_elem(&odd_pairs, &pair);
	if (!ps) {
		bpf_map_update_elem(&odd_pairs, &pair, &init, BPF_NOEXIST);
		ps = bpf_map_lookup_elem(&odd_pairs, &pair);
		if (!ps)
			return;
	}
	ps->count += 1;
	ps->sum_ns += delta;
}

/* point id + 1 of (netns, ifindex, event), 0 if none */
static __always_inline __u32 point_of(__u32 netns, __u32 ifindex, __u32 event)
{
	__u32 base = DEV_HASH(netns, ifindex);
	struct dev_slot *d;

#pragma unroll
	for (int i = 0; i < DEV_PROBES; i++) {
		__u32 idx = (base + i) & (DEV_SLOTS - 1);

		d = bpf_map_lookup_elem(&devs, &idx);
		if (!d || !d->netns)
			return 0;
		if (d->netns == netns && d->ifindex == ifindex)
			return event < EV_COUNT ? d->pt[event & 7] : 0;
	}
	return 0;
}

/* The skb's address as a plain number. The verifier forbids arithmetic on a trusted pointer, but a privileged
 * program may store a pointer in a map value, and what it loads back is a scalar (only hashed and compared). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} scratch SEC(".maps");

static __always_inline __u64 addr_of(const void *p)
{
	__u32 zero = 0;
	volatile __u64 *v = bpf_map_lookup_elem(&scratch, &zero);

	if (!v)
		return 0;
	*v = (__u64)p;
	return *v;
}

static __always_inline struct skb_track *slot_of(__u64 skb)
{
	__u32 idx = TRACK_HASH(skb);

	if (!skb)  /* 0 marks a free slot */
		return NULL;
	return bpf_map_lookup_elem(&tracks, &idx);
}

/* Only a TCP segment with payload reaches skb_copy_datagram_iter at a reader; anything else (UDP, which copies
 * with checksum verification, ICMP, pure ACKs) is freed on paths without a tracepoint, and a slot kept for it
 * would outlive the packet. */
static __always_inline bool reader_will_copy(struct sk_buff *skb)
{
	__u8 h[34]; /* IPv4 header without options + the TCP header up to its data offset */
	__u32 total, doff;

	if (bpf_probe_read_kernel(h, sizeof(h), skb->head + skb->network_header))
		return false;
	if (h[0] != 0x45 || h[9] != 6 /* IPPROTO_TCP */)
		return false;
	total = ((__u32)h[2] << 8) | h[3];
	doff = (h[32] >> 4) * 4;
	return total > 20 + doff;
}

/* The slot still describes this very packet: same skb address and same data buffer (an skb freed without a
 * tracepoint leaves its slot behind, and the slab hands its address to the next skb). */
static __always_inline bool ours(struct skb_track *t, __u64 key, struct sk_buff *skb)
{
	return t->skb == key && t->head == addr_of(skb->head);
}

static __always_inline struct hops_settings *settings_now(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&settings, &zero);
}

/* The slot's packet was in flight when the programs were last detached (duty cycling): whatever it carried is over
 * and is not a hop of the packet now at hand. Ends it as cut. */
static __always_inline bool cut_off(struct skb_track *t)
{
	struct hops_settings *set = settings_now();

	if (!set || t->last_ns >= set->window_ns)
		return false;
	t->skb = 0;
	count(C_CUT);
	return true;
}

static __always_inline bool starts_here(struct sk_buff *skb, struct point_info *pi)
{
	__u32 addrs[2], which = C_CANDIDATES;
	struct hops_settings *set;
	__u64 *c;

	if (!(pi->flags & PT_START) || skb->protocol != bpf_htons(ETH_P_IP))
		return false;
	if (cfg.filter_flows) {
		/* saddr and daddr are adjacent in the IPv4 header, 12 bytes in */
		if (bpf_probe_read_kernel(addrs, sizeof(addrs), skb->head + skb->network_header + 12))
			return false;
		if (addrs[0] != pi->saddr || addrs[1] != pi->daddr)
			return false;
	}
	/* every candidate is counted, so user space can choose the sampling rate from the offered load */
	c = bpf_map_lookup_elem(&counters, &which);
	set = settings_now();
	if (!c || !set)
		return true;
	*c += 1;
	if (set->no_starts)
		return false;
	return set->sample_every <= 1 || (*c % set->sample_every) == 0;
}

static __always_inline int at_point(struct sk_buff *skb, const struct net_device *dev, __u32 event)
{
	struct point_info *pi;
	struct skb_track *t;
	__u64 key = addr_of(skb), now;
	__u32 pt;

	if (!dev)
		return 0;
	pt = point_of(dev->nd_net.net->ns.inum, dev->ifindex, event);
	if (!pt--)
		return 0;
	pi = bpf_map_lookup_elem(&point_info, &pt);
	t = slot_of(key);
	if (!pi || !t)
		return 0;

	if (pi->flags & (PT_START | PT_RESET)) {
		if (!starts_here(skb, pi)) {
			/* whatever this address carried before is over: a new packet enters the topology here */
			if (t->skb == key && !cut_off(t))
				t->skb = 0;
			return 0;
		}
		now = bpf_ktime_get_ns();
		if (t->skb && cut_off(t))
			;  /* counted as cut, not as lost */
		else if (t->skb && t->skb != key && now - t->last_ns < cfg.stale_ns)
			count(C_LOST);
		t->skb = key;
		t->head = addr_of(skb->head);
		t->first_ns = now;
		t->last_ns = now;
		t->last_pt = pt;
		t->dir = pi->dir;
		count(C_STARTED);
		return 0;
	}

	if (t->skb != key || cut_off(t))
		return 0;
	now = bpf_ktime_get_ns();
	if (now - t->last_ns > cfg.stale_ns) {
		count(C_STALE);
		t->skb = 0;
		return 0;
	}
	hop(t->last_pt, pt, now - t->last_ns);
	t->last_ns = now;
	t->last_pt = pt;
	t->head = addr_of(skb->head);  /* encapsulation may move the data to a new buffer */
	/* End-to-end is recorded on arrival at the path's last point (the destination's stack entry): later
	 * events (socket copy, free) are not observable for every protocol, e.g. UDP frees without a tracepoint. */
	if (pi->flags & PT_END) {
		hist_add(MAX_HOPS + (t->dir & (MAX_DIRS - 1)), now - t->first_ns);
		if (!reader_will_copy(skb)) {
			t->skb = 0;
			count(C_END_PATH);
		}
	}
	return 0;
}

SEC("tp_btf/net_dev_queue")
int BPF_PROG(on_dev_queue, struct sk_buff *skb)
{
	return at_point(skb, skb->dev, EV_QUEUE);
}

SEC("tp_btf/net_dev_start_xmit")
int BPF_PROG(on_dev_start_xmit, struct sk_buff *skb, const struct net_device *dev)
{
	return at_point(skb, dev, EV_XMIT);
}

SEC("tp_btf/netif_rx")
int BPF_PROG(on_netif_rx, struct sk_buff *skb)
{
	return at_point(skb, skb->dev, EV_RX);
}

SEC("tp_btf/netif_receive_skb")
int BPF_PROG(on_netif_receive_skb, struct sk_buff *skb)
{
	return at_point(skb, skb->dev, EV_RECEIVE);
}

/* skb->dev is not usable here (UDP reuses it as dev_scratch), so the point is the reader's netns socket layer.
 * The first copy delivers the packet; later partial copies of the same skb are not hops. */
SEC("tp_btf/skb_copy_datagram_iovec")
int BPF_PROG(on_copy, struct sk_buff *skb, int len)
{
	__u64 key = addr_of(skb), now;
	struct skb_track *t = slot_of(key);
	struct task_struct *task;
	__u32 pt;

	if (!t || !ours(t, key, (struct sk_buff *)skb) || cut_off(t))
		return 0;
	t->skb = 0;
	count(C_END_COPY);
	/* bpf_get_current_task_btf() needs 5.11; the untyped task and CO-RE reads work from 5.5 (only tracked
	 * packets get here) */
	task = (struct task_struct *)bpf_get_current_task();
	pt = point_of(BPF_CORE_READ(task, nsproxy, net_ns, ns.inum), 0, EV_COPY);
	now = bpf_ktime_get_ns();
	if (pt-- && now - t->last_ns <= cfg.stale_ns)
		hop(t->last_pt, pt, now - t->last_ns);
	return 0;
}

SEC("tp_btf/consume_skb")
int BPF_PROG(on_consume_skb, struct sk_buff *skb)
{
	__u64 key = addr_of(skb);
	struct skb_track *t = slot_of(key);

	if (t && t->skb == key && !cut_off(t)) {
		t->skb = 0;
		if (t->head == addr_of(skb->head))
			count(C_END_FREE);
	}
	return 0;
}

/* A tracked packet freed as a drop: count it under its last point and reason, end its tracking. */
static __always_inline int dropped(struct sk_buff *skb, __u32 reason)
{
	__u64 key = addr_of(skb), one = 1, *c;
	struct skb_track *t = slot_of(key);
	struct drop_key dk = {};

	if (!t || t->skb != key || cut_off(t))
		return 0;
	t->skb = 0;
	if (t->head != addr_of(skb->head))
		return 0;
	dk.point = t->last_pt;
	dk.reason = reason;
	c = bpf_map_lookup_elem(&drops, &dk);
	if (c)
		*c += 1;
	else
		bpf_map_update_elem(&drops, &dk, &one, BPF_NOEXIST);
	count(C_END_DROP);
	return 0;
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(on_kfree_skb, struct sk_buff *skb, void *location, enum skb_drop_reason reason)
{
	return dropped(skb, reason);
}

/* Kernels before 5.17 (no enum skb_drop_reason, kfree_skb(skb, location) only): the verifier refuses a read of
 * a third argument, so this variant is loaded instead (user space picks one by the kernel's BTF); reason 0 is
 * reported as "unknown", the point is kept. */
SEC("tp_btf/kfree_skb")
int BPF_PROG(on_kfree_skb_noreason, struct sk_buff *skb, void *location)
{
	return dropped(skb, DROP_REASON_UNKNOWN);
}
