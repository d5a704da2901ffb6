// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Per-hop latency of the packets of chosen flows along a CNI datapath.
 *
 * Every tracked skb carries (first time, last time, last point) in a hash keyed by its address. Each time it
 * passes a registered point, the time since its previous point goes into the histogram of that (from, to) pair;
 * nothing per packet crosses to user space. Points are (event, netns, ifindex) mapped to small ids by user space,
 * so the hot path never touches a string. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "hops.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

const volatile struct hops_cfg cfg = {};

#define ETH_P_IP 0x0800

struct skb_track {
	__u64 first_ns;
	__u64 last_ns;
	__u32 last_pt;
	__u32 dir;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4 * MAX_POINTS);
	__type(key, struct point_key);
	__type(value, struct point_val);
} points SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct flow_key);
	__type(value, __u32);
} flows SEC(".maps");

/* LRU: entries of skbs freed on paths without a tracepoint (e.g. GRO's stolen heads) age out instead of
 * filling the map; the age check below keeps a reused address from being mistaken for the old packet. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
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

static __always_inline void hist_add(__u32 slot, __u64 delta)
{
	struct hist *h = bpf_map_lookup_elem(&hists, &slot);
	__u32 b;

	if (!h)
		return;
	b = bucket_of(delta);
	h->count += 1;
	h->sum_ns += delta;
	if (b < HIST_BUCKETS)
		h->buckets[b] += 1;
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

static __always_inline bool flow_matches(struct sk_buff *skb)
{
	struct flow_key fk;
	struct iphdr iph;

	if (skb->protocol != bpf_htons(ETH_P_IP))
		return false;
	if (bpf_probe_read_kernel(&iph, sizeof(iph), skb->head + skb->network_header))
		return false;
	if (!cfg.filter_flows)
		return true;
	fk.saddr = iph.saddr;
	fk.daddr = iph.daddr;
	return bpf_map_lookup_elem(&flows, &fk) != NULL;
}

static __always_inline bool sampled_in(void)
{
	__u32 which = C_SAMPLED_OUT;
	__u64 *c;

	if (cfg.sample_every <= 1)
		return true;
	/* per-CPU counter of candidates: every N-th one is tracked */
	c = bpf_map_lookup_elem(&counters, &which);
	if (!c)
		return true;
	*c += 1;
	return (*c % cfg.sample_every) == 0;
}

static __always_inline void end_tracking(__u64 key, __u32 reason_counter)
{
	count(reason_counter);
	bpf_map_delete_elem(&tracks, &key);
}

static __always_inline int at_point(struct sk_buff *skb, const struct net_device *dev, __u32 event)
{
	struct point_key pk;
	struct point_val *pt;
	struct skb_track *t;
	__u64 key, now;

	if (!dev)
		return 0;
	pk.netns = dev->nd_net.net->ns.inum;
	pk.ifindex = dev->ifindex;
	pk.event = event;
	pt = bpf_map_lookup_elem(&points, &pk);
	if (!pt)
		return 0;

	key = (__u64)skb;
	now = bpf_ktime_get_ns();
	if (pt->flags & PT_START) {
		struct skb_track nt = {};

		if (!flow_matches(skb) || !sampled_in())
			return 0;
		nt.first_ns = now;
		nt.last_ns = now;
		nt.last_pt = pt->id;
		nt.dir = pt->dir;
		bpf_map_update_elem(&tracks, &key, &nt, BPF_ANY);
		count(C_STARTED);
		return 0;
	}

	t = bpf_map_lookup_elem(&tracks, &key);
	if (!t)
		return 0;
	if (now - t->last_ns > cfg.stale_ns) {
		count(C_STALE);
		bpf_map_delete_elem(&tracks, &key);
		return 0;
	}
	hop(t->last_pt, pt->id, now - t->last_ns);
	t->last_ns = now;
	t->last_pt = pt->id;
	/* End-to-end is recorded on arrival at the path's last point (the destination's stack entry): later
	 * events (socket copy, free) are not observable for every protocol, e.g. UDP frees without a tracepoint. */
	if (pt->flags & PT_END)
		hist_add(MAX_HOPS + (t->dir & (MAX_DIRS - 1)), now - t->first_ns);
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

/* skb->dev is not usable here (UDP reuses it as dev_scratch), so the point is the reader's netns socket layer. */
SEC("tp_btf/skb_copy_datagram_iovec")
int BPF_PROG(on_copy, struct sk_buff *skb, int len)
{
	struct task_struct *task;
	struct point_key pk = {};
	struct point_val *pt;
	struct skb_track *t;
	__u64 key = (__u64)skb, now;

	t = bpf_map_lookup_elem(&tracks, &key);
	if (!t)
		return 0;
	now = bpf_ktime_get_ns();
	if (now - t->last_ns > cfg.stale_ns) {
		count(C_STALE);
		bpf_map_delete_elem(&tracks, &key);
		return 0;
	}
	task = bpf_get_current_task_btf();
	pk.netns = task->nsproxy->net_ns->ns.inum;
	pk.event = EV_COPY;
	pt = bpf_map_lookup_elem(&points, &pk);
	if (pt) {
		hop(t->last_pt, pt->id, now - t->last_ns);
	}
	/* the first copy delivers the packet; later partial copies of the same skb are not hops */
	end_tracking(key, C_END_COPY);
	return 0;
}

SEC("tp_btf/consume_skb")
int BPF_PROG(on_consume_skb, struct sk_buff *skb)
{
	__u64 key = (__u64)skb;
	struct skb_track *t = bpf_map_lookup_elem(&tracks, &key);

	if (t)
		end_tracking(key, C_END_FREE);
	return 0;
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(on_kfree_skb, struct sk_buff *skb, void *location, enum skb_drop_reason reason)
{
	__u64 key = (__u64)skb, one = 1, *c;
	struct skb_track *t = bpf_map_lookup_elem(&tracks, &key);
	struct drop_key dk = {};

	if (!t)
		return 0;
	dk.point = t->last_pt;
	dk.reason = reason;
	c = bpf_map_lookup_elem(&drops, &dk);
	if (c)
		*c += 1;
	else
		bpf_map_update_elem(&drops, &dk, &one, BPF_NOEXIST);
	count(C_END_DROP);
	bpf_map_delete_elem(&tracks, &key);
	return 0;
}
