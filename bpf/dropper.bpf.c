// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* A test fixture, not part of any datapath: a tc (clsact, direct action) program that drops every Nth IPv4
 * packet matching (saddr, daddr, proto), so tests can inject a known loss at a chosen device and direction and
 * compare what the hop probe reports with what was really dropped (the counters below are the truth: the kernel
 * reports each of these drops through skb:kfree_skb with SKB_DROP_REASON_TC_EGRESS or _TC_INGRESS).
 * The match is on the outermost IPv4 header the hook sees (the underlay addresses on a tunnel's lower device). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "dropper.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define TC_ACT_OK 0
#define TC_ACT_SHOT 2
#define ETH_P_IP 0x0800

const volatile struct dropper_cfg cfg = {};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DROPPER_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} dropper_counts SEC(".maps");

SEC("tc")
int drop_nth(struct __sk_buff *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	__u32 k = DROPPER_MATCHED;
	__u64 *matched, *dropped, n;

	if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	if ((cfg.saddr && ip->saddr != cfg.saddr) || (cfg.daddr && ip->daddr != cfg.daddr) ||
	    (cfg.proto && ip->protocol != cfg.proto))
		return TC_ACT_OK;
	matched = bpf_map_lookup_elem(&dropper_counts, &k);
	k = DROPPER_DROPPED;
	dropped = bpf_map_lookup_elem(&dropper_counts, &k);
	if (!matched || !dropped)
		return TC_ACT_OK;
	n = __sync_fetch_and_add(matched, 1) + 1;
	if (!cfg.every || n % cfg.every)
		return TC_ACT_OK;
	__sync_fetch_and_add(dropped, 1);
	return TC_ACT_SHOT;
}
