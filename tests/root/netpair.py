# SPDX-License-Identifier: Apache-2.0
"""Two throwaway namespaces joined by a veth pair, for generator tests, and a check that no child process stays.

The veth is created inside the first namespace with its peer placed directly in the second, so the root
namespace's networking is never touched. The namespaces are this session's own (owned.netns_name: the session's
`cniprof_<id>-` prefix, never the lab's `...-node`), so the addresses and fixed ports the tests use inside them
are private to the session, and conftest.py's leak checks cover them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil


def _remove(name: str) -> None:
    from pyroute2 import netns

    if Path("/run/netns", name).exists():
        netns.remove(name)


@contextmanager
def veth_pair(ns_a: str, ns_b: str, ip_a: str, ip_b: str, dev_a: str, dev_b: str) -> Iterator[tuple[str, str]]:
    """(ns_a, ns_b) with dev_a/ip_a/24 in ns_a and dev_b/ip_b/24 in ns_b, removed on exit."""
    from pyroute2 import NetNS, netns

    for name in (ns_a, ns_b):  # leftovers of an interrupted earlier run
        _remove(name)
    try:
        for name in (ns_a, ns_b):
            netns.create(name)
        with NetNS(ns_a) as a:
            a.link("add", ifname=dev_a, kind="veth", peer={"ifname": dev_b, "net_ns_fd": ns_b})
        for name, ifname, ip in ((ns_a, dev_a, ip_a), (ns_b, dev_b, ip_b)):
            with NetNS(name) as ns:
                index = ns.link_lookup(ifname=ifname)[0]
                ns.addr("add", index=index, address=ip, prefixlen=24)
                ns.link("set", index=index, state="up")
                ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
        yield ns_a, ns_b
    finally:
        for name in (ns_a, ns_b):
            _remove(name)


def snmp(netns: str) -> dict[str, int]:
    """The namespace's own SNMP counters (/proc/net/snmp and /proc/net/netstat are per namespace): what the
    kernel counted, to check a generator's numbers against."""
    from cniprof.netns_exec import run_in
    from cniprof.node.state import parse_snmp

    return {**parse_snmp(run_in(netns, ["cat", "/proc/net/snmp"])),
            **parse_snmp(run_in(netns, ["cat", "/proc/net/netstat"]))}


def delta(after: dict[str, int], before: dict[str, int], key: str) -> int:
    return after[key] - before[key]


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


@contextmanager
def no_process_left() -> Iterator[None]:
    """Fail if the block leaves child processes behind (a generator must kill what it started)."""
    before = _children()
    yield
    deadline = time.monotonic() + 2
    while _children() - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _children() - before == set(), "a generator left processes behind"



@contextmanager
def sigint_not_ignored() -> Iterator[None]:
    """Start children inside this block when a test interrupts them with SIGINT. A shell's background job (CI
    started with `&` outside job control) inherits SIGINT ignored, an ignored signal stays ignored across exec,
    and Python then never raises KeyboardInterrupt: the child would run on as if Ctrl-C had not been pressed. A
    handled signal is reset to the default on exec, so the children get a SIGINT Python turns into
    KeyboardInterrupt."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
