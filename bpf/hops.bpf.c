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

/* mmapable: user space counts the packets still in flight at a snapshot without a syscall per slot */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TRACK_SLOTS);
	__uint(map_flags, BPF_F_MMAPABLE);
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

/* ends other than deliveries and drops, per (last point, enum end_kind) */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 1024);
	__type(key, struct end_key);
	__type(value, __u64);
} ends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, C_COUNT * COUNTER_SETS);
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

/* counter `which` of the set of `epoch` */
static __always_inline void count(__u32 epoch, __u32 which)
{
	__u32 idx = (epoch & 1) * C_COUNT + which;
	__u64 *c = bpf_map_lookup_elem(&counters, &idx);

	if (c)
		*c += 1;
}

static __always_inline void add_one(void *map, const void *key)
{
	__u64 one = 1, *c = bpf_map_lookup_elem(map, key);

	if (c)
		*c += 1;
	else
		bpf_map_update_elem(map, key, &one, BPF_NOEXIST);
}

static __always_inline void hist_add(__u32 slot, __u64 delta)
{
	struct hist *h = bpf_map_lookup_elem(&hists, &slot);

	if (h)
		hist_record(h, delta);
}

static __always_inline void hop(__u32 epoch, __u32 from, __u32 to, __u64 delta)
{
	__u32 pair = (from & (MAX_POINTS - 1)) * MAX_POINTS + (to & (MAX_POINTS - 1));
	__u32 *slot = bpf_map_lookup_elem(&pair_slot, &pair);
	struct pair_stat *ps, init = {};

	if (slot && *slot) {
		hist_add(*slot, delta);
		return;
	}
	count(epoch, C_UNEXPECTED);
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

static __always_inline struct hops_settings *settings_now(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&settings, &zero);
}

/* user space has frozen the aggregates for its final read (checked once a tracked packet is at hand) */
static __always_inline bool frozen(void)
{
	struct hops_settings *set = settings_now();

	return !set || set->frozen;
}

/* --- accounting: every started packet ends exactly once -------------------------------------------------------
 * A slot changes hands only by compare-and-swap of its key, so when two CPUs race for it (a start evicting a packet
 * another CPU is ending, two frees ...) exactly one of them swaps the key out, and only that one counts the end.
 * `was` keeps what the end is counted with, read before the swap: a later start overwrites the slot. */

struct ended {
	__u64 skb;
	__u64 last_ns;
	__u32 last_pt;
	__u32 epoch;
};

static __always_inline void remember(const struct skb_track *t, struct ended *was)
{
	was->skb = t->skb;
	was->last_ns = t->last_ns;
	was->last_pt = t->last_pt;
	was->epoch = t->epoch;
}

#ifndef HOPS_NO_ATOMICS
#define swap_key(p, old, new) (__sync_val_compare_and_swap((p), (old), (new)) == (old))
#else
/* bpf/hops_legacy.bpf.c, for kernels before 5.12, which refuse BPF atomics at load: a plain compare and store.
 * Two CPUs racing for one slot (two packets that hash together, handled at the same instant) may then count one
 * end twice or none; measured nowhere here (no such kernel runs the accounting tests). */
static __always_inline bool swap_key(__u64 *p, __u64 old, __u64 new)
{
	if (*(volatile __u64 *)p != old)
		return false;
	*p = new;
	return true;
}
#endif

static __always_inline bool take(struct skb_track *t, __u64 key, __u64 to, struct ended *was)
{
	remember(t, was);
	if (was->skb != key)
		return false;
	return swap_key(&t->skb, key, to);
}

/* Count the end of the packet that held a slot (`was`): counter `which` of its epoch, and for the ends that are not
 * deliveries (kind < END_KINDS) one more at its last point. A packet started before the aggregates were restarted
 * (another epoch) was not counted as started in this one, so its end is not counted either. */
static __always_inline void end_of(const struct ended *was, __u32 which, __u32 kind)
{
	struct hops_settings *set = settings_now();
	struct end_key k = {.point = was->last_pt, .kind = kind};

	if (!set || set->epoch != was->epoch)
		return;
	count(was->epoch, which);
	if (kind < END_KINDS)
		add_one(&ends, &k);
}

/* The packet in `was` was in flight when duty cycling last detached the programs (user space's window_ns is the
 * attach after it): whatever it did in the gap was not seen, so nothing is timed across it. */
static __always_inline bool cut_by_detach(__u64 last_ns)
{
	struct hops_settings *set = settings_now();

	return set && last_ns < set->window_ns;
}

/* The packet in `was` ended without a tracepoint (its address now carries another packet). */
static __always_inline void end_unseen(const struct ended *was, __u64 now)
{
	if (cut_by_detach(was->last_ns))
		end_of(was, C_CUT, END_CUT);
	else if (now - was->last_ns > cfg.stale_ns)
		end_of(was, C_STALE, END_STALE);
	else
		end_of(was, C_END_UNSEEN, END_UNSEEN);
}

/* --- identity ------------------------------------------------------------------------------------------------ */

/* A packet's fingerprint from its IPv4 header at offset `nh` from skb->head: protocol, IP ID and the first L4 word
 * after the ports (TCP sequence number; UDP length and checksum; ICMP id and sequence). None of these change along
 * a CNI path (TTL, addresses and ports may: routing, NAT), and a recycled skb carries another packet. 0 = unknown. */
#define L3_BYTES 28 /* the IPv4 header without options and the first 8 bytes of L4 */

/* Read L3_BYTES at offset `nh` from skb->head into h (8-byte aligned); false if there is no network header. */
static __always_inline bool read_l3(struct sk_buff *skb, __u16 nh, __u8 *h)
{
	return nh != (__u16)~0U && !bpf_probe_read_kernel(h, L3_BYTES, skb->head + nh);
}

/* The fingerprint of the IPv4 header read at nh into h (read_l3); a header with options needs one more read. */
static __always_inline __u64 fingerprint_of(struct sk_buff *skb, __u16 nh, const __u8 *h)
{
	__u32 l4w;

	if ((h[0] >> 4) != 4)
		return 0;
	if ((h[0] & 15) == 5) {
		l4w = *(__u32 *)&h[24];
	} else if (bpf_probe_read_kernel(&l4w, sizeof(l4w), skb->head + nh + (h[0] & 15) * 4 + 4)) {
		return 0;
	}
	return ((__u64)h[9] << 48) | ((__u64)*(__u16 *)&h[4] << 32) | l4w;
}

static __always_inline __u64 fingerprint_at(struct sk_buff *skb, __u16 nh)
{
	__u8 h[L3_BYTES] __attribute__((aligned(8)));

	return read_l3(skb, nh, h) ? fingerprint_of(skb, nh, h) : 0;
}

/* The IPv4 protocol of a fingerprint (0: none) */
static __always_inline __u8 fp_protocol(__u64 fp)
{
	return fp >> 48;
}

/* The slot still holds this very packet: same skb address (checked by the caller) and the same data buffer, or,
 * when the buffer moved since the last point (headroom expanded for a tunnel device, a cloned header copied before
 * a write: the packet of issue 17), the same fingerprint, found at the network header or inside the
 * encapsulation. An skb freed without a tracepoint leaves its slot behind and the slab hands its address to the
 * next skb: that one has another buffer and another fingerprint. */
static __always_inline bool same_packet(const struct skb_track *t, struct sk_buff *skb)
{
	__u16 inner;

	if (t->head == addr_of(skb->head))
		return true;
	if (!t->fp)
		return false;
	if (fingerprint_at(skb, skb->network_header) == t->fp)
		return true;
	inner = skb->inner_network_header;
	return inner && inner != skb->network_header && fingerprint_at(skb, inner) == t->fp;
}

/* --- points -------------------------------------------------------------------------------------------------- */

/* Is the path's end the end of what can be seen of this packet? For TCP and UDP it is not: the socket layer may
 * still drop it (INPUT rules, a full receive buffer, no socket) and TCP readers copy it with a tracepoint, so their
 * slot is kept until the copy, a free, or its address coming back (UDP reads, TCP receive coalescing and pure ACKs
 * free without a tracepoint). ICMP ends here: ping as root reads a raw-socket clone and the kernel then frees the
 * original with NO_SOCKET, which is not a loss. */
static __always_inline bool ends_at_path_end(struct sk_buff *skb, __u64 fp)
{
	__u8 h[10], proto = fp_protocol(fp);  /* the protocol does not change along the path: the start's */

	if (!fp) {  /* no fingerprint at the start: the header here */
		if (bpf_probe_read_kernel(h, sizeof(h), skb->head + skb->network_header))
			return true;
		proto = h[9];
	}
	return proto != 6 /* IPPROTO_TCP */ && proto != 17 /* IPPROTO_UDP */;
}

/* Does a packet of the traced flows start here (and is it sampled)? Sets *fp to its fingerprint. With the flow
 * filter, the one read of the header gives both the addresses and the fingerprint (a helper call each costs). */
static __always_inline bool starts_here(struct sk_buff *skb, struct point_info *pi, struct hops_settings *set,
					__u64 *fp)
{
	__u8 h[L3_BYTES] __attribute__((aligned(8)));
	__u32 idx = (set->epoch & 1) * C_COUNT + C_CANDIDATES;
	__u16 nh = skb->network_header;
	bool have = false;
	__u64 *c;

	if (!(pi->flags & PT_START) || skb->protocol != bpf_htons(ETH_P_IP))
		return false;
	if (cfg.filter_flows) {
		/* saddr and daddr are adjacent in the IPv4 header, 12 bytes in */
		if (!read_l3(skb, nh, h))
			return false;
		if (*(__u32 *)&h[12] != pi->saddr || *(__u32 *)&h[16] != pi->daddr)
			return false;
		have = true;
	}
	/* every candidate is counted, so user space can choose the sampling rate from the offered load */
	c = bpf_map_lookup_elem(&counters, &idx);
	if (!c)
		return false;
	*c += 1;
	if (set->no_starts)  /* duty cycling: draining before a detach */
		return false;
	if (set->sample_every > 1 && (*c % set->sample_every) != 0)
		return false;
	if (!cfg.filter_flows)
		have = read_l3(skb, nh, h);
	*fp = have ? fingerprint_of(skb, nh, h) : 0;
	return true;
}

/* --- node agent mode: identity of a packet from its (inner) headers, records through the ring buffer ---------- */

struct ident {
	__u64 key;   /* sampling hash: leaves out daddr and dport, which DNAT rewrites before the wire */
	__u64 id;    /* the record's identity: key mixed with daddr and dport */
	__u64 fp;    /* fingerprint_at() of the same (inner) IPv4 header */
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
	/* the first 8 bytes after the IPv4 header: ports and the word after them (the fingerprint's) */
	if (bpf_probe_read_kernel(l4, sizeof(l4), p + ihl))
		__builtin_memset(l4, 0, sizeof(l4));
	if (!frag && ip[9] == 1) { /* ICMP: echo id and sequence of echo requests/replies */
		if (l4[0] == 8 || l4[0] == 0) {
			sport = ((__u32)l4[4] << 8) | l4[5];
			seq = ((__u32)l4[6] << 8) | l4[7];
		}
	} else if (!frag && (ip[9] == 6 || ip[9] == 17)) {
		sport = ((__u32)l4[0] << 8) | l4[1];
		dport = ((__u32)l4[2] << 8) | l4[3];
		if (ip[9] == 6)
			seq = ((__u32)l4[4] << 24) | ((__u32)l4[5] << 16) | ((__u32)l4[6] << 8) | l4[7];
	}
	__builtin_memcpy(&out->saddr, &ip[12], 4);
	__builtin_memcpy(&out->daddr, &ip[16], 4);
	out->fp = ((__u64)ip[9] << 48) | ((__u64)*(__u16 *)&ip[4] << 32) | *(__u32 *)&l4[4];
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

/* At most cfg.max_records_per_s records per window over all CPUs: the add is atomic (a plain XADD, no fetch: old
 * kernels have it) and each CPU reads the sum that includes its own add, so no more than the limit pass (a racy
 * window reset can only let a few more by). */
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
static __always_inline bool agent_starts_here(struct sk_buff *skb, struct point_info *pi, struct hops_settings *set,
					      __u32 event, struct ident *ident)
{
	__u32 idx = (set->epoch & 1) * C_COUNT + C_CANDIDATES;
	__u64 *c;

	if (!(pi->flags & PT_START) || skb->protocol != bpf_htons(ETH_P_IP))
		return false;
	if (!identify(l3_of(skb, event), ident))
		return false;
	if (cfg.filter_flows && (ident->saddr != pi->saddr || ident->daddr != pi->daddr))
		return false;
	c = bpf_map_lookup_elem(&counters, &idx);
	if (!c)
		return false;
	*c += 1;
	return set->sample_every <= 1 || (ident->key % set->sample_every) == 0;
}

/* agent mode: the records of a tracked packet at this point; `ident` is valid when the packet started here.
 * After the source node's last point the packet leaves the node: its tracking ends there (the path's end of this
 * node's part). */
static __always_inline void agent_records(struct sk_buff *skb, struct point_info *pi, struct skb_track *t,
					  __u64 key, __u32 pt, __u32 event, __u64 now, struct ident *ident,
					  bool started)
{
	struct ended was;

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
		if (take(t, key, 0, &was))
			end_of(&was, C_END_PATH, END_KINDS);
	}
}

/* A point where packets enter the topology: a traced packet starts here, any other ends what its address held. */
static __always_inline int at_entry(struct sk_buff *skb, struct point_info *pi, struct skb_track *t, __u64 key,
				    __u32 pt, __u32 event)
{
	struct hops_settings *set = settings_now();
	struct ident ident;  /* agent mode only, written whole by identify() before any read */
	struct ended was;
	__u64 now, fp = 0;
	bool go;

	if (!set || set->frozen)
		return 0;
	if (cfg.agent) {
		/* the point's time is taken before the identity is read: the parse is not the hop's */
		now = bpf_ktime_get_ns();
		go = agent_starts_here(skb, pi, set, event, &ident);
		if (go)
			fp = ident.fp;
	} else {
		go = starts_here(skb, pi, set, &fp);
	}
	if (!go) {
		/* whatever this address carried before is over: a new packet enters the topology here */
		if (t->skb == key && take(t, key, 0, &was))
			end_unseen(&was, bpf_ktime_get_ns());
		return 0;
	}
	if (!cfg.agent)
		now = bpf_ktime_get_ns();
	remember(t, &was);
	if (!swap_key(&t->skb, was.skb, key))
		return 0;  /* another CPU changed the slot in between: this packet is not tracked (nor counted) */
	if (was.skb == key)
		end_unseen(&was, now);  /* its address is back: the packet it carried was freed without a tracepoint */
	else if (was.skb && was.last_ns < set->window_ns)
		end_of(&was, C_CUT, END_CUT);
	else if (was.skb && now - was.last_ns > cfg.stale_ns)
		end_of(&was, C_STALE, END_STALE);
	else if (was.skb)
		end_of(&was, C_LOST, END_LOST);  /* a fresh packet evicted by a hash clash */
	t->head = addr_of(skb->head);
	t->first_ns = now;
	t->last_ns = now;
	t->last_pt = pt;
	t->dir = pi->dir;
	t->fp = fp;
	t->epoch = set->epoch;
	count(set->epoch, C_STARTED);
	if (cfg.agent)
		agent_records(skb, pi, t, key, pt, event, now, &ident, true);
	return 0;
}

static __always_inline int at_point(struct sk_buff *skb, const struct net_device *dev, __u32 event)
{
	struct hops_settings *set;
	struct point_info *pi;
	struct ended was;
	__u64 key = addr_of(skb), now;
	struct skb_track *t = slot_of(key);
	__u32 pt;

	if (!t || !dev)
		return 0;
	/* Most packets here are not tracked, and such a packet matters only at a start point (a reset point ends
	 * only what a tracked address held): at an event without start points it is left before the device
	 * lookup. cfg is constant once loaded and `event` is per program, so the verifier keeps one branch. */
	if (!(cfg.start_events & (1U << event)) && t->skb != key)
		return 0;
	pt = point_of(dev->nd_net.net->ns.inum, dev->ifindex, event);
	if (!pt--)
		return 0;
	pi = bpf_map_lookup_elem(&point_info, &pt);
	if (!pi)
		return 0;
	if (pi->flags & (PT_START | PT_RESET))
		return at_entry(skb, pi, t, key, pt, event);

	if (t->skb != key)
		return 0;
	set = settings_now();
	if (!set || set->frozen)
		return 0;
	if (t->last_ns < set->window_ns) {  /* its previous point was before a detach: no hop across the gap */
		if (take(t, key, 0, &was))
			end_of(&was, C_CUT, END_CUT);
		return 0;
	}
	now = bpf_ktime_get_ns();
	if (now - t->last_ns > cfg.stale_ns) {
		if (take(t, key, 0, &was))
			end_of(&was, C_STALE, END_STALE);
		return 0;
	}
	hop(t->epoch, t->last_pt, pt, now - t->last_ns);
	t->last_ns = now;
	t->last_pt = pt;
	t->head = addr_of(skb->head);  /* encapsulation may move the data to a new buffer */
	/* End-to-end is recorded on arrival at the path's last point (the destination's stack entry): later
	 * events (socket copy, free) are not observable for every protocol, e.g. UDP frees without a tracepoint. */
	if (pi->flags & PT_END) {
		hist_add(MAX_HOPS + (t->dir & (MAX_DIRS - 1)), now - t->first_ns);
		if (ends_at_path_end(skb, t->fp) && take(t, key, 0, &was))
			end_of(&was, C_END_PATH, END_KINDS);
	}
	if (cfg.agent) {
		struct ident ident;

		agent_records(skb, pi, t, key, pt, event, now, &ident, false);
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

/* The netns of the task that runs the program (the socket's reader, for the copy). bpf_get_current_task_btf()
 * gives a typed task whose fields are read directly (5.11+, every kernel of this object); the legacy object's
 * kernels may be older: the untyped task and three CO-RE reads (a helper call each, ~40 ns apiece here). */
static __always_inline __u32 reader_netns(void)
{
#ifndef HOPS_NO_ATOMICS
	return bpf_get_current_task_btf()->nsproxy->net_ns->ns.inum;
#else
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();

	return BPF_CORE_READ(task, nsproxy, net_ns, ns.inum);
#endif
}

/* skb->dev is not usable here (UDP reuses it as dev_scratch), so the point is the reader's netns socket layer.
 * The first copy delivers the packet; later partial copies of the same skb are not hops. */
SEC("tp_btf/skb_copy_datagram_iovec")
int BPF_PROG(on_copy, struct sk_buff *skb, int len)
{
	__u64 key = addr_of(skb), now;
	struct skb_track *t = slot_of(key);
	struct ended was;
	bool same;
	__u32 pt;

	if (!t || t->skb != key || frozen())
		return 0;
	same = same_packet(t, skb);
	if (!take(t, key, 0, &was))
		return 0;
	now = bpf_ktime_get_ns();
	if (!same) {
		end_unseen(&was, now);
		return 0;
	}
	end_of(&was, C_END_COPY, END_KINDS);
	if (cut_by_detach(was.last_ns))
		return 0;  /* delivered, but its previous point was before a detach: no hop across the gap */
	pt = point_of(reader_netns(), 0, EV_COPY);
	if (pt-- && now - was.last_ns <= cfg.stale_ns)
		hop(was.epoch, was.last_pt, pt, now - was.last_ns);
	return 0;
}

/* The shared end of tracking for every free tracepoint (and for kfree_skb variants of older kernels, which pass
 * DROP_REASON_UNKNOWN): the kernel freed `skb`, consumed (reason SKB_CONSUMED) or dropped. A tracked
 * packet's drop is counted at the last point it passed, with the reason; a free of an address whose packet ended
 * unseen earlier ends that packet as unseen (nothing is charged to the traced path). */
static __always_inline void track_freed(struct sk_buff *skb, __u32 reason)
{
	__u64 key = addr_of(skb);
	struct skb_track *t = slot_of(key);
	struct ended was;
	struct drop_key dk = {};
	struct hops_settings *set;
	bool same;

	if (!t || t->skb != key || frozen())
		return;
	same = same_packet(t, skb);
	if (!take(t, key, 0, &was))
		return;
	if (!same) {
		end_unseen(&was, bpf_ktime_get_ns());
		return;
	}
	if (reason == SKB_CONSUMED) {
		end_of(&was, C_END_FREE, END_FREE);
		return;
	}
	set = settings_now();
	if (!set || set->epoch != was.epoch)
		return;
	dk.point = was.last_pt;
	dk.reason = reason;
	add_one(&drops, &dk);
	count(was.epoch, C_END_DROP);
}

SEC("tp_btf/consume_skb")
int BPF_PROG(on_consume_skb, struct sk_buff *skb)
{
	track_freed(skb, SKB_CONSUMED);
	return 0;
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(on_kfree_skb, struct sk_buff *skb, void *location, enum skb_drop_reason reason)
{
	track_freed(skb, reason);
	return 0;
}

/* Kernels before 5.17 (no enum skb_drop_reason, kfree_skb(skb, location) only): the verifier refuses a read of
 * a third argument, so this variant is loaded instead (user space picks one by the kernel's BTF); reason 0 is
 * reported as "unknown", the point is kept. */
SEC("tp_btf/kfree_skb")
int BPF_PROG(on_kfree_skb_noreason, struct sk_buff *skb, void *location)
{
	track_freed(skb, DROP_REASON_UNKNOWN);
	return 0;
}
