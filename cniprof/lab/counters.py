# SPDX-License-Identifier: Apache-2.0
"""Throughput so far, from the destination pod's eth0 byte counter (a kernel counter, not an estimate)."""

from __future__ import annotations

import time
from typing import Any

from pyroute2 import NetNS


def rx_bytes(netns: str, ifindex: int) -> int:
    with NetNS(netns, flags=0) as ipr:  # flags=0: never create a namespace by mistake
        link = ipr.get_links(ifindex)[0]
        stats = link.get_attr("IFLA_STATS64")
        return int(stats["rx_bytes"])


class RxBytes:
    """Bits per second received on one device since the meter was created."""

    def __init__(self, netns: str | None, ifindex: int):
        self.netns, self.ifindex = netns, ifindex
        self.t0 = time.monotonic()
        self.b0 = rx_bytes(netns, ifindex) if netns else 0

    @classmethod
    def for_snapshot(cls, snapshot: dict[str, Any]) -> RxBytes:
        """Meter on the forward direction's destination pod device."""
        dst = snapshot["directions"][0]["dst_pod"]
        for p in snapshot["points"]:
            if p.get("pod") == dst and p["role"] in ("pod_veth", "macvlan"):  # the pod's own eth0
                return cls(p["netns"], p["ifindex"])
        return cls(None, 0)

    def bps(self) -> float | None:
        if not self.netns:
            return None
        dt = time.monotonic() - self.t0
        return (rx_bytes(self.netns, self.ifindex) - self.b0) * 8 / dt if dt > 0 else None
