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

/* agent mode: records of packets crossing between nodes (ARCHITECTURE.md "Node agents"); in the single tracer
 * (cfg.agent == 0) no program touches them and the ring keeps its minimum size */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, RECORD_RING_BYTES);
} records SEC(".maps");

/* a ring buffer has no value type: this pointer puts struct hop_record into the object's BTF, where
 * tests/root/test_bpf_abi.py checks the Python mirror against it (never used) */
struct hop_record *unused_hop_record __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rec_window);
} rec_window SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, RC_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} rec_counts SEC(".maps");

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

static __always_inline bool starts_here(struct sk_buff *skb, struct point_info *pi)
{
	__u32 addrs[2], zero = 0, which = C_CANDIDATES;
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
	set = bpf_map_lookup_elem(&settings, &zero);
	if (!c || !set)
		return true;
	*c += 1;
	return set->sample_every <= 1 || (*c % set->sample_every) == 0;
}

/* ---- node agent mode: identity of a packet from its (inner) headers, records through the ring buffer ---- */

struct ident {
	__u64 key;   /* sampling hash: leaves out daddr and dport, which DNAT rewrites before the wire */
	__u64 id;    /* the record's identity: key mixed with daddr and dport */
	__u32 saddr; /* network byte order, as in struct point_info */
	__u32 daddr;
};

static __always_inline __u64 mix64(__u64 x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x;
}

/* The IPv4 header: on transmit points the stack has set network_header (skb->data is the L2 header); on receive
 * points skb->data is the L3 header (eth_type_trans pulled the MAC header) while network_header may be stale. */
static __always_inline unsigned char *l3_of(struct sk_buff *skb, __u32 event)
{
	if (event == EV_QUEUE || event == EV_XMIT)
		return skb->head + skb->network_header;
	return skb->data;
}

/* The packet's identity from its IPv4 header at p, or from the inner one when it is VXLAN (UDP to 4789 or 8472):
 * both nodes hash the same inner fields, whatever the encapsulation on the wire. Fields that change between the
 * nodes (TTL, checksum, outer headers) are never used. The Python mirror is cniprof.analysis.clock.identity. */
static __always_inline bool identify(unsigned char *p, struct ident *out)
{
	__u8 ip[20], l4[8] = {};
	__u16 ethertype, udp[2];
	__u32 ihl, sport = 0, dport = 0, seq = 0, frag;

	if (bpf_probe_read_kernel(ip, sizeof(ip), p) || (ip[0] >> 4) != 4)
		return false;
	ihl = (ip[0] & 15) * 4;
	frag = ((__u32)(ip[6] & 0x1f) << 8) | ip[7];
	if (ip[9] == 17 /* UDP */ && !frag) {
		if (bpf_probe_read_kernel(udp, sizeof(udp), p + ihl))
			return false;
		dport = bpf_ntohs(udp[1]);
		if (dport == VXLAN_PORT_IANA || dport == VXLAN_PORT_LINUX) {
			p += ihl + 8 /* UDP */ + 8 /* VXLAN */;
			if (bpf_probe_read_kernel(&ethertype, sizeof(ethertype), p + 12) ||
			    ethertype != bpf_htons(ETH_P_IP))
				return false;
			p += 14;
			if (bpf_probe_read_kernel(ip, sizeof(ip), p) || (ip[0] >> 4) != 4)
				return false;
			ihl = (ip[0] & 15) * 4;
			frag = ((__u32)(ip[6] & 0x1f) << 8) | ip[7];
		}
		dport = 0;
	}
	if (!frag && (ip[9] == 6 || ip[9] == 17 || ip[9] == 1)) {
		if (bpf_probe_read_kernel(l4, sizeof(l4), p + ihl))
			return false;
		if (ip[9] == 1) { /* ICMP: echo id and sequence of echo requests/replies */
			if (l4[0] == 8 || l4[0] == 0) {
				sport = ((__u32)l4[4] << 8) | l4[5];
				seq = ((__u32)l4[6] << 8) | l4[7];
			}
		} else {
			sport = ((__u32)l4[0] << 8) | l4[1];
			dport = ((__u32)l4[2] << 8) | l4[3];
			if (ip[9] == 6)
				seq = ((__u32)l4[4] << 24) | ((__u32)l4[5] << 16) | ((__u32)l4[6] << 8) | l4[7];
		}
	}
	__builtin_memcpy(&out->saddr, &ip[12], 4);
	__builtin_memcpy(&out->daddr, &ip[16], 4);
	out->key = mix64((((__u64)bpf_ntohl(out->saddr)) << 32 | ((__u64)ip[4] << 24) | ((__u64)ip[5] << 16) | ip[9]) ^
			 mix64(((__u64)sport << 32) | seq));
	out->id = mix64(out->key ^ (((__u64)bpf_ntohl(out->daddr) << 32) | dport));
	return true;
}

static __always_inline void rec_count(__u32 which)
{
	__u64 *c = bpf_map_lookup_elem(&rec_counts, &which);

	if (c)
		*c += 1;
}

/* At most cfg.max_records_per_s records per window over all CPUs: the add is atomic and each CPU reads the sum
 * that includes its own add, so no more than the limit pass (a racy window reset can only let a few more by). */
static __always_inline bool rec_allowed(__u64 now)
{
	__u32 zero = 0;
	struct rec_window *w = bpf_map_lookup_elem(&rec_window, &zero);
	__u64 win = now >> RECORD_WINDOW_SHIFT;

	if (!w)
		return false;
	if (w->window != win) {
		w->window = win;
		w->count = 0;
	}
	__sync_fetch_and_add(&w->count, 1);
	return w->count <= cfg.max_records_per_s;
}

static __always_inline void emit(__u8 kind, __u64 id, __u64 now, __u64 span, __u32 dir, __u32 pt)
{
	struct hop_record *r;

	if (!rec_allowed(now)) {
		rec_count(RC_RATE);
		return;
	}
	r = bpf_ringbuf_reserve(&records, sizeof(*r), 0);
	if (!r) {
		rec_count(RC_FULL);
		return;
	}
	r->id = id;
	r->t_ns = now;
	r->span_ns = span;
	r->dir = dir;
	r->kind = kind;
	r->point = pt;
	r->reserved = 0;
	/* no wakeup: the agent drains the ring on its own schedule (a wakeup per record costs an irq_work) */
	bpf_ringbuf_submit(r, BPF_RB_NO_WAKEUP);
	rec_count(RC_SENT);
}

/* agent mode's start: the direction's flow (inner addresses through VXLAN), sampled by identity so that every
 * node tracks the same packets */
static __always_inline bool agent_starts_here(struct sk_buff *skb, struct point_info *pi, __u32 event,
					      struct ident *ident)
{
	__u32 zero = 0, which = C_CANDIDATES;
	struct hops_settings *set;
	__u64 *c;

	if (!(pi->flags & PT_START) || skb->protocol != bpf_htons(ETH_P_IP))
		return false;
	if (!identify(l3_of(skb, event), ident))
		return false;
	if (cfg.filter_flows && (ident->saddr != pi->saddr || ident->daddr != pi->daddr))
		return false;
	c = bpf_map_lookup_elem(&counters, &which);
	set = bpf_map_lookup_elem(&settings, &zero);
	if (!c || !set)
		return true;
	*c += 1;
	return set->sample_every <= 1 || (ident->key % set->sample_every) == 0;
}

/* agent mode: the records of a tracked packet at this point; `ident` is valid when the packet started here.
 * After the source node's last point the packet leaves the node: its tracking ends. */
static __always_inline void agent_records(struct sk_buff *skb, struct point_info *pi, struct skb_track *t,
					  __u32 pt, __u32 event, __u64 now, struct ident *ident, bool started)
{
	if (!(pi->flags & (PT_REC_LAST | PT_REC_FIRST | PT_REC_END)))
		return;
	if (!started && !identify(l3_of(skb, event), ident))
		return;
	if (pi->flags & PT_REC_FIRST)
		emit(REC_FIRST, ident->id, now, 0, t->dir, pt);
	if (pi->flags & PT_REC_END)
		emit(REC_END, ident->id, now, now - t->first_ns, t->dir, pt);
	if (pi->flags & PT_REC_LAST) {
		emit(REC_LAST, ident->id, now, now - t->first_ns, t->dir, pt);
		if (t->skb) {
			t->skb = 0;
			count(C_END_PATH);
		}
	}
}

static __always_inline int at_point(struct sk_buff *skb, const struct net_device *dev, __u32 event)
{
	struct point_info *pi;
	struct skb_track *t;
	struct ident ident;  /* agent mode only, written whole by identify() before any read */
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
		/* agent mode reads the packet's identity first: the point's time is taken before that work */
		if (cfg.agent)
			now = bpf_ktime_get_ns();
		if (cfg.agent ? !agent_starts_here(skb, pi, event, &ident) : !starts_here(skb, pi)) {
			/* whatever this address carried before is over: a new packet enters the topology here */
			if (t->skb == key)
				t->skb = 0;
			return 0;
		}
		if (!cfg.agent)
			now = bpf_ktime_get_ns();
		if (t->skb && t->skb != key && now - t->last_ns < cfg.stale_ns)
			count(C_LOST);
		t->skb = key;
		t->head = addr_of(skb->head);
		t->first_ns = now;
		t->last_ns = now;
		t->last_pt = pt;
		t->dir = pi->dir;
		count(C_STARTED);
		if (cfg.agent)
			agent_records(skb, pi, t, pt, event, now, &ident, true);
		return 0;
	}

	if (t->skb != key)
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
	if (cfg.agent)
		agent_records(skb, pi, t, pt, event, now, &ident, false);
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

	if (!t || !ours(t, key, (struct sk_buff *)skb))
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

	if (t && t->skb == key) {
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

	if (!t || t->skb != key)
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
