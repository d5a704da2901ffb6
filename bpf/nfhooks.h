/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* The ABI between bpf/nfhooks.bpf.c and cniprof/probes/nfhooks.py: fixed-width types only, never vmlinux.h.
 * cniprof/probes/nfhooks_abi.py mirrors these structs; tests check both against the object's BTF.
 * Histograms use struct hist and the buckets of hops.h / hist.bpf.h (one bucket formula for every program). */
#ifndef CNIPROF_NFHOOKS_H
#define CNIPROF_NFHOOKS_H

#define NF_HOOKS 5         /* IPv4 hooks NF_INET_PRE_ROUTING (0) .. NF_INET_POST_ROUTING (4), uapi values */
#define NF_MAX_NETNS 16    /* namespaces one probe watches; user space assigns each an index */
#define NF_SLOTS (NF_MAX_NETNS * NF_HOOKS) /* statistics slot of (netns index, hook) = index * NF_HOOKS + hook */
#define NF_MAX_ADDRS 16    /* IPv4 filter: a packet is timed if its saddr or daddr is one of these */

/* Stamps of packets inside a hook: per CPU, NF_STAMP_WAYS per hook, picked by a hash of the skb address, so a
 * packet interrupted inside a hook by another one on the same CPU (a softirq over process-context OUTPUT) does
 * not overwrite its stamp unless the two hash together. */
#define NF_STAMP_WAYS 16
#define NF_STAMP_HASH(skb) ((__u32)(((__u64)(skb) * 0x9E3779B97F4A7C15ULL) >> 60) & (NF_STAMP_WAYS - 1))

struct nf_stamp {
	__u64 skb;       /* 0 = free; else a packet that entered the hook and has not left it yet */
	__u64 ts;        /* bpf_ktime_get_ns() at the first program */
	__u32 netns_idx; /* index of the namespace it entered the hook in */
	__u32 pad;
};

struct nf_stamps {   /* the only value of the per-CPU array "stamps"; slot = hook * NF_STAMP_WAYS + way */
	struct nf_stamp s[NF_HOOKS * NF_STAMP_WAYS];
	__u64 scratch;   /* turns the skb pointer into a number (see addr_of in nfhooks.bpf.c) */
};

struct nf_netns {    /* the only value of the array "netns": which namespace has which index */
	__u32 count;
	__u32 ino[NF_MAX_NETNS];  /* net->ns.inum, the inode of /run/netns/<name> */
};

struct nf_filter {   /* the only value of the array "filter" */
	__u32 count;              /* 0 = time every IPv4 packet */
	__u32 addr[NF_MAX_ADDRS]; /* network byte order */
};

#endif
