# SPDX-License-Identifier: Apache-2.0
"""ICMP echo between namespaces with iputils ping: a light, per-packet RTT reference for the tracer.

`ip netns exec NS ping -n -c N -i 0.2 -W 1 IP`, output parsed in the C locale: per-reply RTTs from the
"icmp_seq=.. time=.. ms" lines, transmitted/received/loss and min/avg/max/mdev from the summary.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from cniprof.errors import CniprofError, EnvironmentProblem, UsageError
from cniprof.traffic.netns import BackgroundProcess, Generator, require_netns, require_tool

_REPLY = re.compile(r"icmp_seq=(\d+)\b.*?\btime[=<]([\d.]+) ms")
_COUNTS = re.compile(r"(\d+) packets transmitted, (\d+) (?:packets )?received.*?([\d.]+)% packet loss")
_RTT = re.compile(r"(?:rtt|round-trip) min/avg/max(?:/(?:mdev|stddev))? = ([\d.]+)/([\d.]+)/([\d.]+)(?:/([\d.]+))?")


@dataclass(frozen=True)
class PingResult:
    """Summary of a ping run; RTTs in milliseconds (None when no reply came back)."""

    transmitted: int
    received: int
    loss_pct: float
    min_ms: float | None
    avg_ms: float | None
    max_ms: float | None
    mdev_ms: float | None
    rtts_ms: dict[int, float] = field(default_factory=dict)  # icmp_seq -> RTT of that reply


def parse_ping(text: str) -> PingResult:
    """Parse iputils ping output (C locale); raises CniprofError when there is no summary."""
    rtts: dict[int, float] = {}
    for match in _REPLY.finditer(text):
        rtts.setdefault(int(match.group(1)), float(match.group(2)))  # first reply wins over a (DUP!)
    counts = _COUNTS.search(text)
    if not counts:
        first = next((line.strip() for line in text.splitlines() if line.strip()), "no output")
        raise CniprofError(f"ping printed no summary: {first}")
    rtt = _RTT.search(text)
    values = [float(v) if v is not None else None for v in rtt.groups()] if rtt else [None] * 4
    return PingResult(
        transmitted=int(counts.group(1)),
        received=int(counts.group(2)),
        loss_pct=float(counts.group(3)),
        min_ms=values[0],
        avg_ms=values[1],
        max_ms=values[2],
        mdev_ms=values[3],
        rtts_ms=rtts,
    )


INTERVAL_S = 0.2  # between two echo requests, by default


class Ping(Generator):
    """count echo requests from netns to ip, interval_s apart, each waiting at most reply_timeout_s."""

    def __init__(
        self,
        netns: str,
        ip: str,
        count: int = 5,
        interval_s: float = INTERVAL_S,
        reply_timeout_s: int = 1,
        payload_size: int | None = None,
    ) -> None:
        if count < 1:
            raise UsageError(f"ping count must be at least 1, not {count}")
        if interval_s <= 0:
            raise UsageError(f"ping interval must be positive, not {interval_s}")
        self.netns = netns
        self.ip = ip
        self.count = count
        self.interval_s = interval_s
        self.reply_timeout_s = reply_timeout_s
        self.payload_size = payload_size
        self._proc: BackgroundProcess | None = None
        self._started_at = 0.0

    def argv(self) -> list[str]:
        argv = ["ping", "-n", "-c", str(self.count), "-i", f"{self.interval_s:g}", "-W", str(self.reply_timeout_s)]
        if self.payload_size is not None:
            argv += ["-s", str(self.payload_size)]
        return [*argv, self.ip]

    def start(self) -> None:
        """Start ping in the background; returns immediately."""
        if self._proc is not None:
            raise CniprofError("ping already started")
        require_tool("ping")
        require_netns(self.netns)
        self._proc = BackgroundProcess(self.netns, self.argv())
        self._proc.start()
        self._started_at = time.monotonic()

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def wait(self, timeout: float | None = None) -> PingResult:
        """Wait for ping to finish (default: its own worst case + 5 s) and parse it; always cleans up."""
        if self._proc is None:
            raise CniprofError("ping was not started")
        if timeout is None:
            worst = self.count * self.interval_s + self.reply_timeout_s + 5.0
            timeout = max(0.0, worst - (time.monotonic() - self._started_at))
        try:
            rc = self._proc.wait(timeout)
        finally:
            self.stop()
        # iputils: 0 = replies, 1 = no reply (still a valid measurement), 2 = error
        if rc not in (0, 1):
            msg = self._proc.first_error_line()
            if "not found" in msg or "No such file" in msg:
                raise EnvironmentProblem(f"ping could not run in {self.netns}: {msg}")
            raise CniprofError(f"ping {self.ip} in {self.netns} failed: {msg}")
        return parse_ping(self._proc.stdout)

    def stop(self) -> None:
        """Kill ping if it is still running. Idempotent."""
        if self._proc is not None:
            self._proc.kill()
