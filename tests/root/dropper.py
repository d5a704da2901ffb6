# SPDX-License-Identifier: Apache-2.0
"""Known loss for the drop tests: bpf/dropper.bpf.c attached to one lab device's tc hook drops every Nth matching
IPv4 packet and counts what it matched and dropped (the truth the hop probe's drops are compared with).

The filter is removed on exit; a clsact qdisc the dropper had to create is removed too, so the lab is left as it
was (an empty clsact would still cost every packet a hook call)."""

from __future__ import annotations

import ctypes
import ipaddress
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from cniprof.bpf import libbpf
from cniprof.bpf.build import object_path
from cniprof.netns_exec import call_in, run_in

HANDLE, PRIORITY = 0xD20, 1  # a filter of ours, never one the lab's own tc programs use


class DropperCfg(ctypes.Structure):
    """struct dropper_cfg of bpf/dropper.h (tests/root/test_bpf_abi.py checks it against the object's BTF)."""

    _fields_ = [("every", ctypes.c_uint32), ("saddr", ctypes.c_uint32), ("daddr", ctypes.c_uint32),
                ("proto", ctypes.c_uint32)]


STRUCTS = {"dropper_cfg": DropperCfg}


def _be32(ip: str | None) -> int:
    return int.from_bytes(ipaddress.IPv4Address(ip).packed, "little") if ip else 0


def _has_clsact(netns: str, device: str) -> bool:
    return "clsact" in run_in(netns, ["tc", "qdisc", "show", "dev", device])


@dataclass
class Dropped:
    matched: int = 0
    dropped: int = 0


@contextmanager
def dropper(netns: str, device: str, hook: str, every: int, *, saddr: str | None = None,
            daddr: str | None = None, proto: int = 0) -> Iterator[Dropped]:
    """Drop every `every`-th IPv4 packet matching (saddr, daddr, proto) at `hook` ("egress" or "ingress") of
    `device` in `netns`. The yielded Dropped is filled with the dropper's own counts on exit."""
    point = libbpf.BPF_TC_EGRESS if hook == "egress" else libbpf.BPF_TC_INGRESS
    had_clsact = _has_clsact(netns, device)
    result = Dropped()
    with libbpf.Object(object_path("dropper")) as obj:
        cfg = DropperCfg(every, _be32(saddr), _be32(daddr), proto)
        ctypes.memmove(obj.rodata(), ctypes.byref(cfg), ctypes.sizeof(cfg))
        obj.load()
        fd = obj.prog_fd("drop_nth")

        def ifindex() -> int:  # resolved in the namespace of the calling thread (sysfs would show ours)
            return socket.if_nametoindex(device)

        call_in(netns, lambda: libbpf.tc_attach(ifindex(), point, fd, HANDLE, PRIORITY))
        try:
            yield result
        finally:
            call_in(netns, lambda: libbpf.tc_detach(ifindex(), point, HANDLE, PRIORITY))
            if not had_clsact:
                run_in(netns, ["tc", "qdisc", "del", "dev", device, "clsact"])
            counts = obj.map("dropper_counts")
            for i, name in enumerate(("matched", "dropped")):
                raw = counts.lookup_raw(ctypes.c_uint32(i), 8)
                setattr(result, name, int.from_bytes(raw or bytes(8), "little"))
