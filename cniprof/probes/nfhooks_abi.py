# SPDX-License-Identifier: Apache-2.0
"""ctypes mirror of bpf/nfhooks.h. tests/root/test_nfhooks.py checks every struct against the object's BTF, and
NfHookProbe checks map key/value sizes at load, so a drift between the C and Python sides fails loudly."""

from __future__ import annotations

import ctypes

from cniprof.bpf.btf import c_structs
from cniprof.probes.hops_abi import Hist  # the same struct hist and buckets as the hop histograms

NF_HOOKS = 5
NF_MAX_NETNS = 16
NF_SLOTS = NF_MAX_NETNS * NF_HOOKS
NF_MAX_ADDRS = 16
NF_STAMP_WAYS = 16

# the programs of bpf/nfhooks.bpf.c, in the order they are linked (closing ones first: a stamp without its
# closing program would count as unclosed)
PROGRAMS = ("nf_last", "nf_first")  # netfilter links
FENTRY_PROGRAMS = ("nf_slow_enter", "nf_slow_exit")  # fallback: fentry/fexit on nf_hook_slow
KPROBE_PROGRAMS = ("nf_kp_enter", "nf_kp_exit")  # last resort: kprobe/kretprobe on nf_hook_slow
KPROBE_RETURN = "nf_kp_exit"  # the kretprobe: attached through a tracefs event with its own maxactive
PROGRAMS_OF = {"netfilter_link": PROGRAMS, "fentry": FENTRY_PROGRAMS, "kprobe": KPROBE_PROGRAMS}

u32, u64 = ctypes.c_uint32, ctypes.c_uint64


class NfStamp(ctypes.Structure):
    _fields_ = [("skb", u64), ("ts", u64), ("netns_idx", u32), ("pad", u32)]


class NfStamps(ctypes.Structure):
    _fields_ = [("s", NfStamp * (NF_HOOKS * NF_STAMP_WAYS)), ("scratch", u64)]


class NfNetns(ctypes.Structure):
    _fields_ = [("count", u32), ("ino", u32 * NF_MAX_NETNS)]


class NfFilter(ctypes.Structure):
    _fields_ = [("count", u32), ("addr", u32 * NF_MAX_ADDRS)]


MAP_TYPES = {
    "netns": (u32, NfNetns),
    "filter": (u32, NfFilter),
    "stamps": (u32, NfStamps),
    "hists": (u32, Hist),
    "unclosed": (u32, u64),
}
# C struct name -> ctypes mirror, for the BTF check
STRUCTS = c_structs(NfStamp, NfStamps, NfNetns, NfFilter, Hist)
