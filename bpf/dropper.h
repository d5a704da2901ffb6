/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* The ABI between bpf/dropper.bpf.c (a test fixture: drop every Nth matching IPv4 packet at a tc hook) and
 * tests/root/dropper.py. Fixed-width types only. */
#ifndef CNIPROF_DROPPER_H
#define CNIPROF_DROPPER_H

/* load-time settings (.rodata, the only variable there) */
struct dropper_cfg {
	__u32 every; /* drop the every-th matching packet (1st, 2nd ... counted from 1); 0 = drop none */
	__u32 saddr; /* IPv4 source to match, network byte order; 0 = any */
	__u32 daddr; /* IPv4 destination to match, network byte order; 0 = any */
	__u32 proto; /* IP protocol to match; 0 = any */
};

enum dropper_counter {
	DROPPER_MATCHED = 0, /* IPv4 packets that matched (saddr, daddr, proto) */
	DROPPER_DROPPED = 1, /* of those, dropped (TC_ACT_SHOT) */
	DROPPER_COUNT = 2,
};

#endif
