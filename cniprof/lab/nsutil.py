# SPDX-License-Identifier: Apache-2.0
"""Namespace and netlink helpers shared by every lab recipe (cniprof/lab/recipes/).

They live apart from realize.py so that recipes can use them without importing the dispatcher that imports
the recipes. Everything here works through pyroute2 inside named namespaces; the root namespace is never
changed, and the calling thread never leaves it (see run_in_netns).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, TypeVar

import lazy_loader
import psutil

from cniprof import interrupts
from cniprof.cni.topology import LAB_NETNS_PREFIX
from cniprof.errors import CniprofError
from cniprof.lab.cleanup import list_lab_namespaces, remove_namespaces
from cniprof.netns_exec import call_in

if TYPE_CHECKING:
    import pyroute2
else:  # imported on first use: a command that does not need it does not wait for it
    pyroute2 = lazy_loader.load("pyroute2")

if TYPE_CHECKING:
    from pyroute2 import IPRoute

log = logging.getLogger(__name__)

T = TypeVar("T")

NUD_PERMANENT = 0x80
NTF_SELF = 0x02
RTNH_F_ONLINK = 0x04
RTPROT_BOOT = 3  # what `ip route add` and the netlink library flannel uses leave when no proto is given
RTPROT_BIRD = 12  # Calico's BGP routes (BIRD)
RT_SCOPE_LINK = 253
RTN_BLACKHOLE = 6


def _sysctl_path(key: str) -> str:
    return "/proc/sys/" + (key if "/" in key else key.replace(".", "/"))


def write_sysctl(netns: str, key: str, value: str) -> None:
    """Set a per-namespace sysctl (`net.ipv4.ip_forward` or `net/ipv4/conf/all/rp_filter`) in `netns`.

    Use the slash form for keys whose device name contains a dot (`net/ipv4/conf/vxlan.calico/...`).
    """
    path = _sysctl_path(key)

    def write() -> None:
        with open(path, "w") as f:
            f.write(value)

    call_in(netns, write)


def read_sysctl(netns: str, key: str) -> str:
    path = _sysctl_path(key)

    def read() -> str:
        with open(path) as f:
            return f.read().strip()

    return call_in(netns, read)


@contextlib.contextmanager
def ipr(netns: str) -> Iterator[IPRoute]:
    """An RTNL socket inside `netns` for the block, closed after it; flags=0 so a typo fails instead of creating a
    stray namespace. A Ctrl-C or SIGTERM waits for the block to end (interrupts.deferred: pyroute2's event loop,
    interrupted inside, complains on stderr later): keep blocks to a few requests."""
    with interrupts.deferred(), pyroute2.IPRoute(netns=netns, flags=0) as sock:
        yield sock


def index(sock: IPRoute, ifname: str) -> int:
    found = sock.link_lookup(ifname=ifname)
    if not found:
        raise CniprofError(f"device {ifname} was not created")
    return int(found[0])


def mac(sock: IPRoute, idx: int) -> str:
    (link,) = sock.get_links(idx)
    return str(link.get("IFLA_ADDRESS"))


class Namespaces:
    """The lab namespaces created so far by one build (see `rollback_on_failure`)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def create(self, name: str, forward: bool = False) -> None:
        if not name.startswith(LAB_NETNS_PREFIX):
            raise ValueError(f"lab namespaces must start with {LAB_NETNS_PREFIX!r}: {name}")
        self.names.append(name)  # before create(): the rollback removes it if the build fails right after
        with interrupts.deferred():  # pyroute2 mounts it from a forked child: not something to break off halfway
            pyroute2.netns.create(name)
        prepare_netns(name, forward)


@contextlib.contextmanager
def rollback_on_failure() -> Iterator[Namespaces]:
    """If the build fails (any exception, KeyboardInterrupt included), remove what it created; re-raise."""
    ns = Namespaces()
    try:
        yield ns
    except BaseException:
        log.info("lab build failed; removing %s", ns.names)
        with sigint_ignored():
            _wait_for_forked_helpers()
            existing = set(list_lab_namespaces())
            remove_namespaces(n for n in ns.names if n in existing)
        raise


FORKED_HELPERS_WAIT_S = 5.0


def _wait_for_forked_helpers() -> None:
    """pyroute2 creates a namespace in a forked child: when the build is interrupted (a SIGTERM to this process
    only) that child may still be mounting it, and would leave it behind after the rollback looked. Wait for this
    process's forked children (same command line, no exec) to end first."""
    me = psutil.Process()
    try:
        mine = [c for c in me.children() if c.cmdline() == me.cmdline()]
    except psutil.Error:
        return
    psutil.wait_procs(mine, timeout=FORKED_HELPERS_WAIT_S)


@contextlib.contextmanager
def sigint_ignored() -> Iterator[None]:
    """Keep a second Ctrl-C from interrupting the rollback and leaving half a lab behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def prepare_netns(netns: str, forward: bool) -> None:
    """Quiet, usable namespace: IPv6 off (no router solicitations or MLD reports reach the tracer), lo up,
    and IPv4 forwarding on nodes (they route between pods and the VXLAN device)."""
    if os.path.exists("/proc/sys/net/ipv6"):
        # "default" first so that devices created later inherit it; "all" also covers lo, which exists already
        write_sysctl(netns, "net.ipv6.conf.default.disable_ipv6", "1")
        write_sysctl(netns, "net.ipv6.conf.all.disable_ipv6", "1")
    if forward:
        write_sysctl(netns, "net.ipv4.ip_forward", "1")
    with ipr(netns) as sock:
        sock.link("set", index=index(sock, "lo"), state="up")
