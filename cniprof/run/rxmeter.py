# SPDX-License-Identifier: Apache-2.0
"""Throughput so far, from the destination pod's eth0 byte counter (a kernel counter, not an estimate)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import lazy_loader

from cniprof import interrupts

if TYPE_CHECKING:
    import pyroute2
else:  # imported on first use: a command that does not need it does not wait for it
    pyroute2 = lazy_loader.load("pyroute2")


class RxBytes:
    """Bits per second received on one device since the meter was created.

    One netlink socket stays open inside the namespace for the meter's life: pyroute2 forks a helper process to
    open a socket in another namespace, far too costly to repeat on every refresh of the live view. A Ctrl-C or
    SIGTERM waits for each request to end (interrupts.deferred says why)."""

    def __init__(self, netns: str | None, ifindex: int):
        self.ifindex = ifindex
        with interrupts.deferred():  # flags=0: never create a namespace by mistake
            self.ipr = pyroute2.IPRoute(netns=netns, flags=0) if netns else None
        self.t0 = time.monotonic()
        self.b0 = self._bytes()

    def _bytes(self) -> int:
        if self.ipr is None:
            return 0
        with interrupts.deferred():
            stats = self.ipr.get_links(self.ifindex)[0].get_attr("IFLA_STATS64")
        return int(stats["rx_bytes"])

    @classmethod
    def for_snapshot(cls, snapshot: dict[str, Any]) -> RxBytes:
        """Meter on the forward direction's destination pod device."""
        dst = snapshot["directions"][0]["dst_pod"]
        for p in snapshot["points"]:
            if p.get("pod") == dst and p["role"] == "pod_veth":
                return cls(p["netns"], p["ifindex"])
        return cls(None, 0)

    def bps(self) -> float | None:
        if self.ipr is None:
            return None
        dt = time.monotonic() - self.t0
        return (self._bytes() - self.b0) * 8 / dt if dt > 0 else None

    def close(self) -> None:
        if self.ipr is not None:
            with interrupts.deferred():
                self.ipr.close()
            self.ipr = None
