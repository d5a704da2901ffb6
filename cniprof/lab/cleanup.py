# SPDX-License-Identifier: Apache-2.0
"""Removing a lab: delete its namespaces, which takes every device, route and neighbour with them.

Cleanup works from the namespace names alone (the `cniprof-node` prefix), never from the state file only, so a
lab left behind by a crash, a kill -9 or a half-finished build is still removed. Namespaces of other tools
(and of other engineers on the same machine) never match the prefix and are never touched.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

import lazy_loader

from cniprof.cni.topology import LAB_NETNS_PREFIX, NETNS_DIR, netns_inode
from cniprof.lab import host_sysctl, saved

if TYPE_CHECKING:
    import pyroute2
else:  # imported on first use: a command that does not need it does not wait for it
    pyroute2 = lazy_loader.load("pyroute2")

log = logging.getLogger(__name__)


def list_lab_namespaces(prefix: str = LAB_NETNS_PREFIX) -> list[str]:
    """Names of existing lab namespaces, sorted (`cniprof-node1` before its pods `cniprof-node1-...`)."""
    try:
        names = os.listdir(NETNS_DIR)  # what pyroute2's listnetns does, without importing pyroute2
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(prefix))


def remove_netns(name: str) -> bool:
    """Unmount and unlink /run/netns/<name>; True if it existed.

    The kernel frees the namespace (and its devices) once nothing else holds it: open netlink sockets or
    processes still inside it keep it alive invisibly, see `pids_in`.
    """
    if not name.startswith(LAB_NETNS_PREFIX):
        raise ValueError(f"refusing to remove {name!r}: not a cniprof lab namespace")
    try:
        pyroute2.netns.remove(name)
    except FileNotFoundError:
        return False
    log.info("removed netns %s", name)
    return True


def remove_namespaces(names: Iterable[str]) -> list[str]:
    """Remove the given lab namespaces, pods first; return those that existed."""
    removed = []
    for name in sorted(set(names), key=lambda n: (-n.count("-"), n)):
        if remove_netns(name):
            removed.append(name)
    return removed


def pids_in(netns_name: str) -> list[int]:
    """Processes whose network namespace is the named one (left-over generators keep a netns alive)."""
    try:
        inode = netns_inode(netns_name)
    except FileNotFoundError:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino == inode:
                pids.append(int(entry))
        except OSError:
            continue
    return pids


def teardown() -> tuple[list[str], bool, dict[str, list[int]]]:
    """Remove every lab namespace and then the state file, and restore machine-wide sysctls a crashed study
    left changed (cniprof.lab.host_sysctl); safe to run any number of times.

    Returns (removed namespaces, whether a state file was removed, pids found inside removed namespaces).
    """
    with saved.locked():
        names = list_lab_namespaces()
        lingering = {n: p for n in names if (p := pids_in(n))}
        removed = remove_namespaces(names)
        had_state = saved.clear()
    host_sysctl.restore_from_state()  # machine-wide sysctls a crashed study left changed
    return removed, had_state, lingering
