# SPDX-License-Identifier: Apache-2.0
"""Loaders for the recorded `cniprof trace --cpu` runs (tests/unit/data/record_cpu.py made them)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data"
TCP = "recorded_cpu_tcp.json.gz"  # iperf3 pod-a -> pod-c, 2 s, flannel lab
TCP_RULES = "recorded_cpu_tcp_rules2000.json.gz"  # the same with 2000 iptables(-nft) FORWARD rules on both nodes


def recorded(name: str = TCP) -> dict[str, Any]:
    """{"cpu": CPU snapshot, "hops": hop snapshot, "summary": summary.json} of a recorded run."""
    return json.loads(gzip.decompress((DATA / name).read_bytes()))


def traffic_bytes(run: dict[str, Any]) -> float:
    """The recorded summary keeps throughput, not bytes: throughput x duration is what the generator moved."""
    s = run["summary"]
    return s["traffic"]["throughput_bps"] / 8 * s["duration_s"]
