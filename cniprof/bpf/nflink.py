# SPDX-License-Identifier: Apache-2.0
"""BPF netfilter links (BPF_PROG_TYPE_NETFILTER, Linux 6.4+) through raw bpf(2): shared by the doctor's probe
(cniprof/bpf/features.py) and the netfilter cost probe (cniprof/probes/nfhooks.py).

Why raw syscalls: Debian's libbpf 1.1 knows neither SEC("netfilter") nor the netfilter link options (they came in
1.2), so the program type is set by hand before load and links are made with BPF_LINK_CREATE here.

Why a helper thread: a netfilter link attaches to the network namespace of the task that creates it. setns()
moves only the calling thread, so links are created from a short-lived thread that entered the target
namespace; the main thread never leaves its own. The link fds stay valid in every thread of the process.

Every enum value comes from the running kernel's BTF, so a kernel without netfilter programs says so by their
absence instead of cniprof guessing from the version number.
"""

from __future__ import annotations

import ctypes
import os
import struct
import threading
from dataclasses import dataclass
from typing import TypeVar

from cniprof.bpf import btf, libbpf
from cniprof.errors import EnvironmentProblem

T = TypeVar("T")

NFPROTO_IPV4 = 2  # an anonymous enum in BTF; uapi value
NF_IP_PRI_FIRST = -(2**31)  # INT_MIN and INT_MAX are reserved by the kernel (-ERANGE); use FIRST+1 / LAST-1
NF_IP_PRI_LAST = 2**31 - 1
# iptables' names for the IPv4 hooks, and their enumerators in enum nf_inet_hooks
HOOK_ENUMS = {
    "PREROUTING": "NF_INET_PRE_ROUTING",
    "INPUT": "NF_INET_LOCAL_IN",
    "FORWARD": "NF_INET_FORWARD",
    "OUTPUT": "NF_INET_LOCAL_OUT",
    "POSTROUTING": "NF_INET_POST_ROUTING",
}

# union bpf_attr (uapi, stable layout), zero-filled beyond what is set:
#   BPF_PROG_LOAD:   prog_type@0 insn_cnt@4 insns@8 license@16 log_level@24 log_size@28 log_buf@32 prog_name@48
#                    expected_attach_type@68
#   BPF_LINK_CREATE: prog_fd@0 target_fd@4 attach_type@8 flags@12 netfilter{pf@16 hooknum@20 priority@24 flags@28}
ATTR_SIZE = 128
_ACCEPT_INSNS = bytes([0xB7, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,   # r0 = 1 (NF_ACCEPT)
                       0x95, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00])  # exit


class ProgLoadError(OSError):
    """BPF_PROG_LOAD refused; errno is the kernel's, log_tail the verifier log's last line ("" if none)."""

    def __init__(self, code: int, log_tail: str) -> None:
        super().__init__(code, os.strerror(code))
        self.log_tail = log_tail


class NetfilterUnavailable(EnvironmentProblem):
    """This kernel has no BPF netfilter programs or links (str(e) says which enumerator is missing)."""


@dataclass(frozen=True)
class NfConstants:
    """The running kernel's values for everything a netfilter link needs."""

    prog_type: int    # BPF_PROG_TYPE_NETFILTER
    attach_type: int  # BPF_NETFILTER
    prog_load: int    # BPF_PROG_LOAD
    link_create: int  # BPF_LINK_CREATE
    hooks: dict[str, int]  # PREROUTING ... POSTROUTING -> enum nf_inet_hooks value


def enum_value(enum: str, name: str, why: str) -> int:
    """An enumerator of this kernel's BTF; NetfilterUnavailable (with `why`) when the kernel lacks it."""
    values = btf.vmlinux().enum_values(enum)
    if name not in values:
        raise NetfilterUnavailable(f"this kernel's BTF has no {name} ({why})")
    return values[name]


def hook_numbers() -> dict[str, int]:
    """PREROUTING ... POSTROUTING -> enum nf_inet_hooks value (every kernel; whatever the attach type)."""
    return {hook: enum_value("nf_inet_hooks", enum, "netfilter hooks") for hook, enum in HOOK_ENUMS.items()}


def constants() -> NfConstants:
    """Enum values from this kernel's BTF (BPF netfilter programs need Linux 6.4+)."""
    why = "BPF netfilter programs need Linux 6.4+"
    return NfConstants(
        prog_type=enum_value("bpf_prog_type", "BPF_PROG_TYPE_NETFILTER", why),
        attach_type=enum_value("bpf_attach_type", "BPF_NETFILTER", why),
        prog_load=enum_value("bpf_cmd", "BPF_PROG_LOAD", why),
        link_create=enum_value("bpf_cmd", "BPF_LINK_CREATE", why),
        hooks=hook_numbers(),
    )


def load_accept_program(c: NfConstants, name: str = "cpdoctor_nf") -> int:
    """Load `r0 = NF_ACCEPT; exit` as a netfilter program; returns its fd (the caller closes it).

    ProgLoadError (an OSError) carries the kernel's errno and the verifier log's last line.
    """
    insns = ctypes.create_string_buffer(_ACCEPT_INSNS, len(_ACCEPT_INSNS))
    license_ = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(4096)
    attr = ctypes.create_string_buffer(ATTR_SIZE)
    struct.pack_into("=IIQQIIQ", attr, 0, c.prog_type, len(_ACCEPT_INSNS) // 8, ctypes.addressof(insns),
                     ctypes.addressof(license_), 1, len(log), ctypes.addressof(log))
    struct.pack_into("=16s", attr, 48, name.encode()[:15])
    struct.pack_into("=I", attr, 68, c.attach_type)  # expected_attach_type
    try:
        return libbpf.bpf_syscall(c.prog_load, attr)
    except OSError as e:
        last = log.value.decode(errors="replace").strip().splitlines()[-1:]
        raise ProgLoadError(e.errno or 0, last[0] if last else "") from None


def link_create(c: NfConstants, prog_fd: int, hooknum: int, priority: int, flags: int = 0) -> int:
    """BPF_LINK_CREATE for an IPv4 netfilter hook in the calling thread's netns; returns the link fd.

    Closing the fd detaches the program. OSError (the kernel's errno) when the kernel refuses.
    """
    attr = ctypes.create_string_buffer(ATTR_SIZE)
    struct.pack_into("=IIII", attr, 0, prog_fd, 0, c.attach_type, 0)
    struct.pack_into("=IIiI", attr, 16, NFPROTO_IPV4, hooknum, priority, flags)
    return libbpf.bpf_syscall(c.link_create, attr)


class LinkSet:
    """Link fds created by helper threads; close() detaches them all.

    Thread-safe and closing-aware: a helper still creating links when the caller gives up (Ctrl-C during the
    join) hands each new fd to add(), which closes it at once if close() already ran, so nothing stays linked.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fds: list[int] = []
        self.closed = False

    def add(self, fd: int) -> bool:
        """Keep fd (True), or close it immediately if the set is closed (False)."""
        with self._lock:
            if not self.closed:
                self._fds.append(fd)
                return True
        os.close(fd)
        return False

    def __len__(self) -> int:
        with self._lock:
            return len(self._fds)

    def close(self) -> None:
        with self._lock:
            self.closed = True
            fds, self._fds = self._fds, []
        for fd in reversed(fds):
            try:
                os.close(fd)
            except OSError:
                pass
