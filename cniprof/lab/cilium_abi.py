# SPDX-License-Identifier: Apache-2.0
"""ctypes mirror of bpf/cilium_tc.h (the lab's Cilium-style tc datapath). tests/root/test_bpf_abi.py checks the
structs against the object's BTF and tests/root/test_cilium.py the constants against the header, so the C and
Python sides cannot drift apart silently."""

from __future__ import annotations

import ctypes

from cniprof.bpf.btf import c_structs

CIL_MODE_NATIVE = 1
CIL_MODE_VXLAN = 2
CIL_MAX_ENDPOINTS = 256
CIL_MAX_PREFIXES = 256
CIL_WORLD_ID = 2

# enum cil_metric, in index order
METRICS = ("fwd_peer", "fwd_neigh", "fwd_tunnel", "to_stack", "drop_ttl", "drop_fib", "drop_tunnel")

# the programs and where the lab attaches them (tc ingress of each)
PROG_LXC = "cil_from_lxc"  # every pod's host-side veth
PROG_NETDEV = "cil_from_netdev"  # the underlay
PROG_VXLAN = "cil_from_vxlan"  # cilium_vxlan (vxlan mode only)
PROGRAMS = (PROG_LXC, PROG_NETDEV, PROG_VXLAN)

u8, u32 = ctypes.c_uint8, ctypes.c_uint32


class CilConfig(ctypes.Structure):
    _fields_ = [("mode", u32), ("vxlan_ifindex", u32), ("underlay_ifindex", u32), ("node_ip", u32)]


class CilEndpoint(ctypes.Structure):
    _fields_ = [("ifindex", u32), ("identity", u32), ("mac", u8 * 6), ("node_mac", u8 * 6)]


class CilIpcacheKey(ctypes.Structure):
    _fields_ = [("prefixlen", u32), ("addr", u32)]


class CilRemote(ctypes.Structure):
    _fields_ = [("tunnel_endpoint", u32), ("identity", u32)]


# C struct name -> ctypes mirror, for the BTF check
STRUCTS = c_structs(CilConfig, CilEndpoint, CilIpcacheKey, CilRemote)
