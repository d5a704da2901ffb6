# SPDX-License-Identifier: Apache-2.0
"""ctypes mirror of bpf/hops.h. tests/root/test_bpf_abi.py checks every struct against the object's BTF, and
HopProbe checks map key/value sizes at load, so a drift between the C and Python sides fails loudly."""

from __future__ import annotations

import ctypes

from cniprof.bpf.btf import c_structs

HIST_SUB_BITS = 4
HIST_BUCKETS = 512
MAX_POINTS = 64
MAX_HOPS = 128
MAX_DIRS = 8
HIST_SLOTS = MAX_HOPS + MAX_DIRS

EVENTS = {"queue": 0, "xmit": 1, "rx": 2, "receive": 3, "copy": 4}
PROGRAM_OF_EVENT = {
    "queue": "on_dev_queue",
    "xmit": "on_dev_start_xmit",
    "rx": "on_netif_rx",
    "receive": "on_netif_receive_skb",
    "copy": "on_copy",
}
# the attach point of each program, as users know it (tp_btf = BTF-typed tracepoint)
ATTACH_POINT = {
    "on_dev_queue": "tp_btf/net:net_dev_queue",
    "on_dev_start_xmit": "tp_btf/net:net_dev_start_xmit",
    "on_netif_rx": "tp_btf/net:netif_rx",
    "on_netif_receive_skb": "tp_btf/net:netif_receive_skb",
    "on_copy": "tp_btf/skb:skb_copy_datagram_iovec",
    "on_consume_skb": "tp_btf/skb:consume_skb",
    "on_kfree_skb": "tp_btf/skb:kfree_skb",
    "on_kfree_skb_noreason": "tp_btf/skb:kfree_skb (no reason argument)",
}
# always attached: they end tracking (and record drops)
END_PROGRAMS = ("on_consume_skb", "on_kfree_skb")
# the drop program for kernels whose kfree_skb has no reason argument (< 5.17); it records DROP_REASON_UNKNOWN
DROP_PROGRAMS = {True: "on_kfree_skb", False: "on_kfree_skb_noreason"}  # by "the kernel has drop reasons"
DROP_REASON_UNKNOWN = 0xFFFFFFFF

PT_START = 1
PT_END = 2
PT_RESET = 4
# agent mode: the point emits a record of this kind for every tracked packet (ARCHITECTURE.md "Node agents")
PT_REC_LAST = 8
PT_REC_FIRST = 16
PT_REC_END = 32
REC_FLAGS = {"last": PT_REC_LAST, "first": PT_REC_FIRST, "end": PT_REC_END}
REC_KINDS = {1: "last", 2: "first", 3: "end"}
VXLAN_PORT_IANA = 4789
VXLAN_PORT_LINUX = 8472
RECORD_WINDOW_SHIFT = 30
RECORD_RING_BYTES = 1 << 20
REC_COUNTERS = ("sent", "rate_limited", "ring_full")
RC_COUNT = 3

DEV_SLOTS = 1024
DEV_PROBES = 8
TRACK_SLOTS = 65536


def dev_hash(netns: int, ifindex: int) -> int:
    """DEV_HASH of hops.h, in u32 arithmetic (tests/unit/test_dev_hash.py checks it against the C macro)."""
    m = 0xFFFFFFFF
    x = (netns * 2654435761 + ifindex * 3266489917) & m
    x ^= x >> 15
    x = (x * 2246822519) & m
    x ^= x >> 13
    return x & (DEV_SLOTS - 1)

COUNTERS = ("started", "unexpected", "stale", "ended_copy", "ended_free", "ended_drop", "candidates", "lost",
            "ended_path", "ended_unseen", "cut")
C_COUNT = 11
COUNTER_SETS = 2  # the counters map holds one set per epoch parity (hops.h)
# enum end_kind: the per-point ends of map "ends" (deliveries and drops are counted elsewhere)
END_KINDS = ("freed", "unseen", "lost", "stale", "cut")

u32, u64 = ctypes.c_uint32, ctypes.c_uint64


class DevSlot(ctypes.Structure):
    _fields_ = [("netns", u32), ("ifindex", u32), ("pt", ctypes.c_uint8 * 8)]


class PointInfo(ctypes.Structure):
    _fields_ = [("flags", u32), ("dir", u32), ("saddr", u32), ("daddr", u32)]


class SkbTrack(ctypes.Structure):
    _fields_ = [("skb", u64), ("head", u64), ("first_ns", u64), ("last_ns", u64), ("last_pt", u32), ("dir", u32),
                ("fp", u64), ("epoch", u32), ("pad", u32)]


class Hist(ctypes.Structure):
    _fields_ = [("count", u64), ("sum_ns", u64), ("buckets", u64 * HIST_BUCKETS)]


class PairStat(ctypes.Structure):
    _fields_ = [("count", u64), ("sum_ns", u64)]


class DropKey(ctypes.Structure):
    _fields_ = [("point", u32), ("reason", u32)]


class EndKey(ctypes.Structure):
    _fields_ = [("point", u32), ("kind", u32)]


class HopsCfg(ctypes.Structure):
    _fields_ = [("stale_ns", u64), ("start_events", u32), ("filter_flows", u32), ("agent", u32),
                ("max_records_per_s", u32)]


class HopRecord(ctypes.Structure):
    _fields_ = [("id", u64), ("t_ns", u64), ("span_ns", u64), ("dir", u32), ("kind", ctypes.c_uint8),
                ("point", ctypes.c_uint8), ("reserved", ctypes.c_uint16)]


class RecWindow(ctypes.Structure):
    _fields_ = [("window", u64), ("count", u64)]


class HopsSettings(ctypes.Structure):
    _fields_ = [("sample_every", u32), ("epoch", u32), ("frozen", u32), ("no_starts", u32), ("window_ns", u64)]


# (map name, key type, value type) for the load-time size check
MAP_TYPES = {
    "devs": (u32, DevSlot),
    "point_info": (u32, PointInfo),
    "tracks": (u32, SkbTrack),
    "pair_slot": (u32, u32),
    "hists": (u32, Hist),
    "odd_pairs": (u32, PairStat),
    "drops": (DropKey, u64),
    "ends": (EndKey, u64),
    "counters": (u32, u64),
    "settings": (u32, HopsSettings),
    "rec_window": (u32, RecWindow),
    "rec_counts": (u32, u64),
}
# C struct name -> ctypes mirror, for the BTF check
STRUCTS = c_structs(DevSlot, PointInfo, SkbTrack, Hist, PairStat, DropKey, EndKey, HopsCfg, HopsSettings, HopRecord,
                    RecWindow)
