# SPDX-License-Identifier: Apache-2.0
"""TCP and UDP request/response latency with `sockperf ping-pong` between two namespaces.

Why sockperf: one small message at a time, so each number is the datapath's round trip (plus two socket
wake-ups), not queueing behind a bulk flow; it prints percentiles up to 99.999 which ping cannot.

Server: `sockperf server -i IP -p PORT [--tcp]` in the server namespace (bound to the pod IP); client
`sockperf ping-pong -i IP -p PORT [--tcp] -t S -m SIZE --full-rtt` in the client namespace. --full-rtt makes
every value a full round trip (sockperf otherwise prints half of it), so it compares directly with ping.
Before the test sockperf has a warm-up stage of WARMUP_S (a few dummy messages, then silence; measured here:
2.0 s), so traffic of a run started at t flows from about t + 2 s to t + 2 s + duration; it then also discards
the test's first 400 ms and its tail: the "Valid Duration" is shorter than -t.
sockperf exits 0 even when it could not connect, so failures are recognised from its output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from cniprof.errors import CniprofError, EnvironmentProblem, UsageError
from cniprof.traffic.netns import BackgroundProcess, ServerClient, require_netns, require_tool

WARMUP_S = 2.0  # sockperf's warm-up stage before the timed test (see the module docstring)
MAX_MSG_SIZE = 65000  # sockperf's own limit for UDP messages

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_AVG = re.compile(r"avg-(?:rtt|latency)=([\d.]+) \(std-dev=([\d.]+)\)")
_PCT = re.compile(r"percentile ([\d.]+) =\s*([\d.]+)")
_MINMAX = re.compile(r"<(MIN|MAX)> observation =\s*([\d.]+)")
_VALID = re.compile(r"\[Valid Duration\] RunTime=([\d.]+) sec; SentMessages=(\d+); ReceivedMessages=(\d+)")
_OBS = re.compile(r"Total (\d+) observations")
_DROPPED = re.compile(r"# dropped messages = (\d+)")


@dataclass(frozen=True)
class SockperfResult:
    """Latencies in microseconds (round trips when full_rtt); counts from the valid (measured) window."""

    proto: str
    avg_us: float
    std_us: float
    p50_us: float
    p99_us: float
    p999_us: float
    min_us: float
    max_us: float
    observations: int
    dropped: int
    valid_s: float
    full_rtt: bool
    percentiles: dict[str, float] = field(default_factory=dict, compare=False)


def parse_sockperf(text: str) -> SockperfResult:
    """Parse a `sockperf ping-pong` client's output (ANSI colours stripped); one-line CniprofError on failure."""
    text = _ANSI.sub("", text)
    for line in text.splitlines():
        if "ERROR" in line or "No messages were received" in line:
            raise CniprofError(f"sockperf failed: {line.split('sockperf:', 1)[-1].strip()}")
    avg = _AVG.search(text)
    pcts = {f"{float(p):g}": float(v) for p, v in _PCT.findall(text)}
    if not avg or not {"50", "99", "99.9"} <= set(pcts):
        first = next((line.strip() for line in text.splitlines() if line.strip()), "no output")
        raise CniprofError(f"sockperf printed no latency summary: {first}")
    minmax = dict(_MINMAX.findall(text))
    valid = _VALID.search(text)
    obs = _OBS.search(text)
    dropped = _DROPPED.search(text)
    return SockperfResult(
        proto="tcp" if "# TCP" in text else "udp",
        avg_us=float(avg.group(1)),
        std_us=float(avg.group(2)),
        p50_us=pcts["50"],
        p99_us=pcts["99"],
        p999_us=pcts["99.9"],
        min_us=float(minmax.get("MIN", pcts["50"])),
        max_us=float(minmax.get("MAX", pcts["99.9"])),
        observations=int(obs.group(1)) if obs else 0,
        dropped=int(dropped.group(1)) if dropped else 0,
        valid_s=float(valid.group(1)) if valid else 0.0,
        full_rtt="avg-rtt" in text,
        percentiles=pcts,
    )


class Sockperf(ServerClient):
    """`sockperf ping-pong` from client_netns to server_ip (in server_netns), TCP or UDP, for duration_s."""

    name = "sockperf"

    def __init__(
        self,
        client_netns: str,
        server_netns: str,
        server_ip: str,
        duration_s: float,
        tcp: bool = True,
        msg_size: int = 64,
        port: int = 11111,
    ) -> None:
        super().__init__(client_netns, server_netns, server_ip, duration_s, port)
        if not 14 <= msg_size <= MAX_MSG_SIZE:  # sockperf's header is 14 bytes
            raise UsageError(f"sockperf message size must be 14..{MAX_MSG_SIZE}, not {msg_size}")
        self.tcp = tcp
        self.msg_size = msg_size

    def _proto(self) -> list[str]:
        return ["--tcp"] if self.tcp else []

    def server_argv(self) -> list[str]:
        return ["sockperf", "server", "-i", self.server_ip, "-p", str(self.port), *self._proto()]

    def client_argv(self) -> list[str]:
        seconds = max(1, int(-(-self.duration_s // 1)))  # -t takes whole seconds
        return ["sockperf", "ping-pong", "-i", self.target_ip, "-p", str(self.port), *self._proto(),
                "-t", str(seconds), "-m", str(self.msg_size), "--full-rtt"]

    def start(self) -> None:
        """Start the server, wait until its socket is bound, start the client; returns immediately."""
        self._check_not_started()
        require_tool("sockperf")
        require_netns(self.client_netns)
        require_netns(self.server_netns)
        self._launch(BackgroundProcess(self.server_netns, self.server_argv()), self.port,
                     "tcp" if self.tcp else "udp", lambda: BackgroundProcess(self.client_netns, self.client_argv()))

    def wait(self, timeout: float | None = None) -> SockperfResult:
        """Wait for the client (default: warm-up + duration + margin), parse it; always kills both ends."""
        client = self._finish(timeout, WARMUP_S + self.duration_s)
        # sockperf writes its report to both streams depending on the version: parse them together
        text = client.stdout + "\n" + client.stderr
        if "avg-" not in text:
            msg = client.first_error_line()
            if "exec of" in msg or "No such file" in msg:
                raise EnvironmentProblem(f"sockperf could not run in {self.client_netns}: {msg}")
        return parse_sockperf(text)
