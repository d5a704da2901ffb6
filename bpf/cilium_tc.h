/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* The ABI between bpf/cilium_tc.bpf.c (the Cilium-style lab datapath) and cniprof/lab/cilium_abi.py: fixed-width
 * types only, never vmlinux.h. The lab fills the maps once per node namespace when it builds the node; the
 * programs only read them (and count into cil_metrics). Addresses are in network byte order. */
#ifndef CNIPROF_CILIUM_TC_H
#define CNIPROF_CILIUM_TC_H

#define CIL_MODE_NATIVE 1 /* remote pods: FIB lookup + bpf_redirect_neigh out of the underlay */
#define CIL_MODE_VXLAN 2  /* remote pods: tunnel key + bpf_redirect to cilium_vxlan (collect_md, UDP 8472) */

#define CIL_MAX_ENDPOINTS 256 /* local pods per node */
#define CIL_MAX_PREFIXES 256  /* ipcache entries: remote pod CIDRs */
#define CIL_WORLD_ID 2        /* Cilium's reserved identity "world": the VNI of traffic from no known endpoint */

struct cil_config {            /* the only value of the array "cil_config" */
	__u32 mode;                /* CIL_MODE_* */
	__u32 vxlan_ifindex;       /* cilium_vxlan in this node's namespace (vxlan mode; 0 otherwise) */
	__u32 underlay_ifindex;    /* eth0 */
	__u32 node_ip;             /* this node's underlay address */
};

struct cil_endpoint {          /* "cil_lxc": local pod IPv4 address -> its endpoint (Cilium's cilium_lxc) */
	__u32 ifindex;             /* the host-side veth (lxc...) in the node namespace: bpf_redirect_peer target */
	__u32 identity;            /* security identity; the VNI when the pod sends through the tunnel */
	__u8 mac[6];               /* the pod's eth0 */
	__u8 node_mac[6];          /* the lxc veth's own address: the pod's gateway MAC */
};

struct cil_ipcache_key {       /* "cil_ipcache" (LPM trie): remote pod prefixes (Cilium's cilium_ipcache) */
	__u32 prefixlen;           /* LPM tries want the prefix length first */
	__u32 addr;
};

struct cil_remote {            /* value of "cil_ipcache" */
	__u32 tunnel_endpoint;     /* the owning node's underlay address (the VXLAN outer destination) */
	__u32 identity;
};

enum cil_metric {              /* index into the per-CPU array "cil_metrics" (packet counts) */
	CIL_FWD_PEER = 0,          /* bpf_redirect_peer into a local pod */
	CIL_FWD_NEIGH = 1,         /* bpf_redirect_neigh out of the underlay (native routing) */
	CIL_FWD_TUNNEL = 2,        /* tunnel key set, bpf_redirect to cilium_vxlan */
	CIL_TO_STACK = 3,          /* TC_ACT_OK: not for a pod this program routes (the node itself, ARP, ...) */
	CIL_DROP_TTL = 4,          /* TTL exhausted */
	CIL_DROP_FIB = 5,          /* no route to a remote pod (native routing) */
	CIL_DROP_TUNNEL = 6,       /* bpf_skb_set_tunnel_key refused */
	CIL_METRICS = 7,
};

#endif /* CNIPROF_CILIUM_TC_H */
