/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* The ABI between bpf/hops.bpf.c and cniprof/probes/hops.py: fixed-width types only, never vmlinux.h.
 * cniprof/probes/hops_abi.py mirrors these structs; tests check both against the object's BTF. */
#ifndef CNIPROF_HOPS_H
#define CNIPROF_HOPS_H

/* Log-linear histogram: 16 linear sub-buckets per power of two (width <= 6.25 % of the value). */
#define HIST_SUB_BITS 4
#define HIST_SUB (1 << HIST_SUB_BITS)
#define HIST_BUCKETS 512

#define MAX_POINTS 64        /* probe points: (event, netns, ifindex) */
#define MAX_HOPS 128         /* histogram slots for expected (from, to) point pairs; slot 0 is unused */
#define MAX_DIRS 8           /* directions: end-to-end histograms live after the hop slots */
#define HIST_SLOTS (MAX_HOPS + MAX_DIRS)

enum hop_event {
	EV_QUEUE = 0,   /* net:net_dev_queue */
	EV_XMIT = 1,    /* net:net_dev_start_xmit */
	EV_RX = 2,      /* net:netif_rx */
	EV_RECEIVE = 3, /* net:netif_receive_skb */
	EV_COPY = 4,    /* skb:skb_copy_datagram_iovec; ifindex 0, netns of the reading task */
	EV_COUNT = 5,
};

/* point flags */
#define PT_START 1 /* a tracked packet begins here (if it matches the point's addresses) */
#define PT_END 2   /* the last point of the path: arrival here records the end-to-end time */
#define PT_RESET 4 /* an entry point of the topology: any other packet passing here is not tracked */

/* Device table: open addressing in a plain array (lookups are inlined by the verifier, unlike a hash map).
 * Slot of (netns, ifindex) = DEV_HASH(netns, ifindex), then the next DEV_PROBES - 1 slots. The hash mixes both
 * halves fully (a namespace's devices have consecutive ifindexes and must not cluster). ifindex 0 with the
 * reading task's netns stands for that namespace's socket layer (the copy event). */
#define DEV_SLOTS 1024
#define DEV_PROBES 8
#define DEV_MIX1(x) ((x) ^ ((x) >> 15))
#define DEV_MIX2(x) (DEV_MIX1(x) * 2246822519u)
#define DEV_MIX3(x) (DEV_MIX2(x) ^ (DEV_MIX2(x) >> 13))
#define DEV_HASH(netns, ifindex) \
	(DEV_MIX3((__u32)((__u32)(netns) * 2654435761u + (__u32)(ifindex) * 3266489917u)) & (DEV_SLOTS - 1))

struct dev_slot {
	__u32 netns;   /* net->ns.inum, equals the inode of /run/netns/<name>; 0 = empty slot */
	__u32 ifindex;
	__u8 pt[8];    /* per enum hop_event: point id + 1, 0 = no point for that event */
};

struct point_info {  /* indexed by point id */
	__u32 flags;   /* PT_* */
	__u32 dir;     /* direction started at a PT_START point, < MAX_DIRS */
	__u32 saddr;   /* PT_START: the direction's IPv4 addresses, network byte order */
	__u32 daddr;
};

/* Packets in flight: a direct-mapped table keyed by skb address (no hash-map insert/delete on the hot path).
 * A start that lands on a slot held by another live packet evicts it and counts C_LOST. */
#define TRACK_SLOTS 65536
#define TRACK_HASH(skb) ((__u32)(((__u64)(skb) * 0x9E3779B97F4A7C15ULL) >> 48) & (TRACK_SLOTS - 1))

struct skb_track {
	__u64 skb;       /* 0 = free; changed only by compare-and-swap: the CPU that swaps a key out counts its end */
	__u64 head;      /* skb->head at the last point: a reused skb address carries another buffer */
	__u64 first_ns;
	__u64 last_ns;
	__u32 last_pt;
	__u32 dir;
	__u64 fp;        /* the packet's fingerprint at its start (IP ID, first word of L4 after the ports): tells a
			  * moved head (same packet, buffer reallocated) from a reused address (another packet) */
	__u32 epoch;     /* settings.epoch at the start: ends of packets started before a reset are not counted */
	__u32 pad;
};

struct hist {
	__u64 count;
	__u64 sum_ns;
	__u64 buckets[HIST_BUCKETS];
};

struct pair_stat {
	__u64 count;
	__u64 sum_ns;
};

struct drop_key {
	__u32 point;
	__u32 reason; /* enum skb_drop_reason, or DROP_REASON_UNKNOWN */
};

/* kfree_skb of a kernel without drop reasons (< 5.17: the tracepoint has no reason argument) */
#define DROP_REASON_UNKNOWN 0xffffffffu

/* How the tracking of a packet ended, counted per last point (map "ends") for every end except the two
 * deliveries (a copy to the reader, the path's end) and drops (map "drops", per point and reason). */
enum end_kind {
	END_FREE = 0,   /* consume_skb: freed as not dropped before the path's end (a GRO frag_list member, ...) */
	END_UNSEEN = 1, /* freed without a tracepoint: its address came back as another packet (after the path's end:
			 * a UDP read, TCP receive coalescing, a pure ACK; before it: a GRO merge of its head) */
	END_LOST = 2,   /* its slot was taken by a new packet while it was still fresh (hash clash) */
	END_STALE = 3,  /* not seen for stale_ns when its address or slot came back */
	END_CUT = 4,    /* in flight when duty cycling detached the programs: not timed across the gap */
	END_KINDS = 5,
};

struct end_key {
	__u32 point;
	__u32 kind; /* enum end_kind */
};

/* run-time settings, changed by user space while attached (ARRAY map "settings", one entry) */
struct hops_settings {
	__u32 sample_every; /* track 1 in N packets that match a start point; 0 or 1 = all */
	__u32 epoch;        /* bumped by user space when it restarts the aggregates: counters of epoch & 1 are used */
	__u32 frozen;       /* 1: every program returns at once (user space reads one consistent final snapshot) */
	__u32 no_starts;    /* 1: no packet starts tracking (duty cycling drains the packets in flight before a detach) */
	__u64 window_ns;    /* CLOCK_MONOTONIC of the current attach: a slot last touched before it belongs to a packet
			     * that was in flight when the programs were detached (END_CUT), never to a hop */
};

/* load-time settings, written into .rodata before load (the only variable there) */
struct hops_cfg {
	__u64 stale_ns;     /* a tracked skb not seen for this long is stale (address reused or lost) */
	__u32 start_events; /* bit (1 << enum hop_event) set: some point of that event is a start point; at the other
			     * events a packet that is not tracked is left at once, before the device lookup */
	__u32 filter_flows; /* 1: a start point tracks only its direction's (saddr, daddr) */
	__u32 agent;        /* 1: node agent mode (identity sampling, records); 0: the single tracer, none of it */
	__u32 max_records_per_s; /* agent mode: records allowed per RECORD_WINDOW, the excess is counted */
};

/* --- node agent mode (ARCHITECTURE.md "Node agents"): records of packets crossing between nodes --- */

/* point flags, agent mode only: the point emits a record of this kind for every tracked packet */
#define PT_REC_LAST 8   /* the source node's last point of the direction (the packet leaves the node after it) */
#define PT_REC_FIRST 16 /* the destination node's first point (a start point) */
#define PT_REC_END 32   /* the destination node's path end */

#define VXLAN_PORT_IANA 4789  /* Calico, Cilium's default elsewhere */
#define VXLAN_PORT_LINUX 8472 /* flannel, Cilium, the kernel's default */
#define RECORD_WINDOW_SHIFT 30 /* rate-limit windows of 2^30 ns (1.07 s) */

enum rec_kind {
	REC_LAST = 1,
	REC_FIRST = 2,
	REC_END = 3,
};

/* one ring-buffer record: hop_record/1 of the agent protocol */
struct hop_record {
	__u64 id;      /* identity hash of the packet (inner headers) */
	__u64 t_ns;    /* bpf_ktime_get_ns() at the point */
	__u64 span_ns; /* LAST, END: time since the packet's first point on this node; FIRST: 0 */
	__u32 dir;
	__u8 kind;     /* enum rec_kind */
	__u8 point;    /* point id (local to this node's probe) */
	__u16 reserved;
};

struct rec_window {
	__u64 window;  /* t_ns >> RECORD_WINDOW_SHIFT of the current window */
	__u64 count;   /* records attempted in it */
};

enum rec_counter {
	RC_SENT = 0,   /* records written to the ring */
	RC_RATE = 1,   /* records over max_records_per_s, not written */
	RC_FULL = 2,   /* records the full ring refused */
	RC_COUNT = 3,
};

#define RECORD_RING_BYTES (1 << 20)

enum hop_counter {
	C_STARTED = 0,    /* packets whose tracking began */
	C_UNEXPECTED = 1, /* hops between points that are not consecutive in the expected chain */
	C_STALE = 2,      /* tracking abandoned: not seen for stale_ns (END_STALE) */
	C_END_COPY = 3,   /* tracking ended by a copy to a socket reader */
	C_END_FREE = 4,   /* tracking ended by consume_skb (END_FREE) */
	C_END_DROP = 5,   /* tracking ended by kfree_skb (a drop) */
	C_CANDIDATES = 6, /* packets that matched a start point (tracked or sampled out) */
	C_LOST = 7,       /* a live packet's slot was taken by a new start (END_LOST) */
	C_END_PATH = 8,   /* tracking ended at the path's end: not TCP or UDP (ICMP) */
	C_END_UNSEEN = 9, /* freed without a tracepoint (END_UNSEEN) */
	C_CUT = 10,       /* in flight at a detach of the programs (END_CUT) */
	C_COUNT = 11,
};
/* The counters map holds two sets, C_COUNT each: set (epoch & 1). Every started packet of an epoch ends in exactly
 * one end counter of the same set or is still in a slot of that epoch (in flight): started == the ends + live. */
#define COUNTER_SETS 2

#endif
