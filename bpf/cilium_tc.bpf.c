// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* The lab's Cilium-style datapath: tc (clsact, direct action) programs that move pod traffic between devices
 * with BPF redirects instead of a bridge, iptables or a routing pass of the node's stack.
 *
 *   cil_from_lxc    tc ingress of each pod's host-side veth (lxc...), i.e. traffic leaving the pod (Cilium's
 *                   cil_from_container): a local pod -> bpf_redirect_peer into its namespace; a remote pod ->
 *                   vxlan mode: tunnel key (VNI = the sender's identity) + bpf_redirect to cilium_vxlan,
 *                   native mode: FIB lookup + bpf_redirect_neigh out of the underlay; anything else (the node
 *                   itself, the world) goes up the node's stack.
 *   cil_from_netdev tc ingress of the underlay (eth0): packets for a local pod -> bpf_redirect_peer.
 *   cil_from_vxlan  tc ingress of cilium_vxlan, after decapsulation (Cilium's cil_from_overlay): same.
 *
 * bpf_redirect_peer switches the skb to the pod's eth0 inside the same __netif_receive_skb_core call (another
 * round), so the host veth's transmit, the pod's backlog and the pod eth0's netif_receive_skb tracepoint never
 * happen: that is the point of it, and why a traced path ends at the node device whose ingress redirected.
 *
 * Delivery to a pod and native forwarding are routing steps, so they decrement the TTL (as Cilium's ipv4_l3);
 * local delivery also writes the pod link's L2 addresses (gateway lxc MAC -> pod MAC). Maps are filled by the
 * lab (cniprof/lab/cilium_tc.py) once per node; one object per node, shared by all its devices. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "cilium_tc.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* uapi macros, not in BTF */
#define TC_ACT_OK 0
#define TC_ACT_SHOT 2
#define TC_ACT_REDIRECT 7
#define ETH_P_IP 0x0800
#define AF_INET 2
#define AF_INET6 10
#define ETH_HLEN 14
#define IP_TTL_OFF (ETH_HLEN + __builtin_offsetof(struct iphdr, ttl))
#define IP_CSUM_OFF (ETH_HLEN + __builtin_offsetof(struct iphdr, check))
#define TUNNEL_TTL 64 /* IPDEFTTL, as Cilium sets it */

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cil_config);
} cil_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, CIL_MAX_ENDPOINTS);
	__type(key, __u32);
	__type(value, struct cil_endpoint);
} cil_lxc SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, CIL_MAX_PREFIXES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct cil_ipcache_key);
	__type(value, struct cil_remote);
} cil_ipcache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CIL_METRICS);
	__type(key, __u32);
	__type(value, __u64);
} cil_metrics SEC(".maps");

static __always_inline int count(__u32 metric, int verdict)
{
	__u64 *n = bpf_map_lookup_elem(&cil_metrics, &metric);

	if (n)
		*n += 1;
	return verdict;
}

/* The IPv4 header behind an Ethernet header, or NULL (ARP, IPv6, ...). Pulls the headers into the linear
 * area when a driver left them in a fragment. */
static __always_inline struct iphdr *ipv4(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth;
	struct iphdr *ip;

	if (data + ETH_HLEN + sizeof(*ip) > end) {
		if (bpf_skb_pull_data(skb, ETH_HLEN + sizeof(*ip)))
			return NULL;
		data = (void *)(long)skb->data;
		end = (void *)(long)skb->data_end;
		if (data + ETH_HLEN + sizeof(*ip) > end)
			return NULL;
	}
	eth = data;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return NULL;
	ip = data + ETH_HLEN;
	if (ip->ihl < 5)
		return NULL;
	return ip;
}

/* TTL - 1 with the header checksum fixed up; -1 when the packet must not be routed any further. */
static __always_inline int dec_ttl(struct __sk_buff *skb)
{
	__be16 old, new;
	__u16 word;

	if (bpf_skb_load_bytes(skb, IP_TTL_OFF, &old, sizeof(old)))
		return -1;
	word = bpf_ntohs(old); /* ttl is the high byte, protocol the low one */
	if ((word >> 8) <= 1)
		return -1;
	new = bpf_htons(word - 0x100);
	if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, old, new, sizeof(new)))
		return -1;
	if (bpf_skb_store_bytes(skb, IP_TTL_OFF, &new, sizeof(new), 0))
		return -1;
	return 0;
}

/* Into a local pod: routed (TTL), L2 of the pod's link, then straight into its namespace. */
static __always_inline int to_pod(struct __sk_buff *skb, const struct cil_endpoint *ep)
{
	__u8 macs[12];
	__u32 ifindex = ep->ifindex;
	long verdict;

	__builtin_memcpy(macs, ep->mac, 6);
	__builtin_memcpy(macs + 6, ep->node_mac, 6);
	if (dec_ttl(skb))
		return count(CIL_DROP_TTL, TC_ACT_SHOT);
	if (bpf_skb_store_bytes(skb, 0, macs, sizeof(macs), 0))
		return TC_ACT_SHOT;
	verdict = bpf_redirect_peer(ifindex, 0);
	return verdict == TC_ACT_REDIRECT ? count(CIL_FWD_PEER, verdict) : verdict;
}

/* Across the tunnel: the outer destination is the owning node, the VNI the sender's identity. */
static __always_inline int to_tunnel(struct __sk_buff *skb, const struct cil_config *cfg,
				     const struct cil_remote *remote, __u32 saddr)
{
	struct bpf_tunnel_key key = {};
	struct cil_endpoint *src = bpf_map_lookup_elem(&cil_lxc, &saddr);
	long verdict;

	key.tunnel_id = src ? src->identity : CIL_WORLD_ID;
	key.remote_ipv4 = bpf_ntohl(remote->tunnel_endpoint); /* the helper wants host byte order */
	key.tunnel_ttl = TUNNEL_TTL;
	/* the pre-6.0 layout's size (up to local_ipv4): every kernel with bpf_redirect_peer accepts it */
	if (bpf_skb_set_tunnel_key(skb, &key, __builtin_offsetof(struct bpf_tunnel_key, local_ipv4),
				   BPF_F_ZERO_CSUM_TX))
		return count(CIL_DROP_TUNNEL, TC_ACT_SHOT);
	verdict = bpf_redirect(cfg->vxlan_ifindex, 0);
	return verdict == TC_ACT_REDIRECT ? count(CIL_FWD_TUNNEL, verdict) : verdict;
}

/* Native routing: the kernel's FIB picks the device and next hop, its neighbour table the MAC. */
static __always_inline int to_fib(struct __sk_buff *skb, __u32 saddr, __u32 daddr, __u8 tos, __u8 proto)
{
	struct bpf_fib_lookup fib = {};
	struct bpf_redir_neigh nh = {};
	long rc;

	fib.family = AF_INET;
	fib.tos = tos;
	fib.l4_protocol = proto;
	fib.ipv4_src = saddr;
	fib.ipv4_dst = daddr;
	fib.ifindex = skb->ingress_ifindex;
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return count(CIL_DROP_FIB, TC_ACT_SHOT);
	if (dec_ttl(skb))
		return count(CIL_DROP_TTL, TC_ACT_SHOT);
	nh.nh_family = fib.family; /* an IPv4 route may have an IPv6 gateway */
	if (fib.family == AF_INET6)
		__builtin_memcpy(nh.ipv6_nh, fib.ipv6_dst, sizeof(nh.ipv6_nh));
	else
		nh.ipv4_nh = fib.ipv4_dst;
	rc = bpf_redirect_neigh(fib.ifindex, &nh, sizeof(nh), 0);
	return rc == TC_ACT_REDIRECT ? count(CIL_FWD_NEIGH, rc) : rc;
}

static __always_inline struct cil_config *node_config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&cil_config, &zero);
}

SEC("tc")
int cil_from_lxc(struct __sk_buff *skb)
{
	struct cil_config *cfg = node_config();
	struct cil_ipcache_key key = { .prefixlen = 32 };
	struct cil_endpoint *ep;
	struct cil_remote *remote;
	struct iphdr *ip;
	__u32 saddr, daddr;
	__u8 tos, proto;

	ip = ipv4(skb);
	if (!cfg || !ip)
		return count(CIL_TO_STACK, TC_ACT_OK);
	saddr = ip->saddr;
	daddr = ip->daddr;
	tos = ip->tos;
	proto = ip->protocol;
	ep = bpf_map_lookup_elem(&cil_lxc, &daddr);
	if (ep)
		return to_pod(skb, ep);
	key.addr = daddr;
	remote = bpf_map_lookup_elem(&cil_ipcache, &key);
	if (!remote)
		return count(CIL_TO_STACK, TC_ACT_OK);
	if (cfg->mode == CIL_MODE_VXLAN)
		return to_tunnel(skb, cfg, remote, saddr);
	return to_fib(skb, saddr, daddr, tos, proto);
}

/* Ingress of a node device (underlay, cilium_vxlan): local pods get their packets, the rest goes up. */
static __always_inline int from_node_device(struct __sk_buff *skb)
{
	struct cil_endpoint *ep;
	struct iphdr *ip;
	__u32 daddr;

	ip = ipv4(skb);
	if (!ip)
		return count(CIL_TO_STACK, TC_ACT_OK);
	daddr = ip->daddr;
	ep = bpf_map_lookup_elem(&cil_lxc, &daddr);
	if (!ep)
		return count(CIL_TO_STACK, TC_ACT_OK);
	return to_pod(skb, ep);
}

SEC("tc")
int cil_from_netdev(struct __sk_buff *skb)
{
	return from_node_device(skb);
}

SEC("tc")
int cil_from_vxlan(struct __sk_buff *skb)
{
	return from_node_device(skb);
}
