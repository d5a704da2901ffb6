# SPDX-License-Identifier: Apache-2.0
"""iperf3 between two network namespaces: bulk TCP (or paced UDP) load while the tracer runs.

Server: `iperf3 -s -1 -p PORT` (one test, then it exits) in the server namespace; the client
`iperf3 -c IP -p PORT -t D -J` in the client namespace. Only the client's JSON is parsed; for TCP the
throughput is what the receiver got (end.sum_received), which is what the datapath delivered.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from cniprof.errors import CniprofError, EnvironmentProblem, UsageError
from cniprof.traffic.netns import BackgroundProcess, ServerClient, require_netns, require_tool


@dataclass(frozen=True)
class Iperf3Result:
    """What the client reported. retransmits is None for UDP; lost_packets/lost_percent only for UDP."""

    throughput_bps: float
    retransmits: int | None
    duration_s: float
    bytes: int = 0
    lost_packets: int | None = None
    lost_percent: float | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


def parse_client_json(text: str) -> Iperf3Result:
    """Parse `iperf3 -c ... -J` output; iperf3's own "error" becomes a one-line CniprofError."""
    try:
        doc = json.loads(text)
    except ValueError as e:
        first = text.strip().splitlines()[0] if text.strip() else "no output"
        raise CniprofError(f"iperf3 client did not print JSON: {first}") from e
    if not isinstance(doc, dict):
        raise CniprofError("iperf3 client printed unexpected JSON (not an object)")
    if doc.get("error"):
        raise CniprofError(f"iperf3 failed: {' '.join(str(doc['error']).split())}")
    end = doc.get("end") or {}
    udp = (doc.get("start", {}).get("test_start", {}).get("protocol") == "UDP") or "sum" in end
    if udp:
        # 3.12 has sum (receiver view incl. loss) and sum_received; older releases only sum.
        summary = end.get("sum_received") or end.get("sum")
        loss = end.get("sum") or summary
    else:
        summary = end.get("sum_received")
        loss = None
    if not summary:
        raise CniprofError("iperf3 output has no end summary (the test did not complete)")
    return Iperf3Result(
        throughput_bps=float(summary.get("bits_per_second", 0.0)),
        retransmits=None if udp else int((end.get("sum_sent") or {}).get("retransmits", 0)),
        duration_s=float(summary.get("seconds", 0.0)),
        bytes=int(summary.get("bytes", 0)),
        lost_packets=int(loss.get("lost_packets", 0)) if loss else None,
        lost_percent=float(loss.get("lost_percent", 0.0)) if loss else None,
        raw=doc,
    )


class Iperf3(ServerClient):
    """An iperf3 test from client_netns to server_ip (which lives in server_netns), run in the background.

    cport pins the client's source port so a tracer can filter on the exact 5-tuple.
    """

    name = "iperf3"

    def __init__(
        self,
        client_netns: str,
        server_netns: str,
        server_ip: str,
        duration_s: float,
        port: int = 5201,
        streams: int = 1,
        udp: bool = False,
        bitrate: str | int | None = None,
        cport: int | None = None,
    ) -> None:
        super().__init__(client_netns, server_netns, server_ip, duration_s, port)
        if streams < 1:
            raise UsageError(f"iperf3 needs at least one stream, not {streams}")
        self.streams = streams
        self.udp = udp
        self.bitrate = bitrate
        self.cport = cport

    def server_argv(self) -> list[str]:
        return ["iperf3", "-s", "-1", "-p", str(self.port)]

    def client_argv(self) -> list[str]:
        # iperf3 -t takes whole seconds; round up so a short run still runs.
        seconds = max(1, int(-(-self.duration_s // 1)))
        argv = ["iperf3", "-c", self.target_ip, "-p", str(self.port), "-t", str(seconds), "-J"]
        argv += ["--connect-timeout", "3000"]
        if self.streams > 1:
            argv += ["-P", str(self.streams)]
        if self.udp:
            argv.append("-u")
        if self.bitrate is not None:
            argv += ["-b", str(self.bitrate)]
        if self.cport is not None:
            argv += ["--cport", str(self.cport)]
        return argv

    def start(self) -> None:
        """Start the server, wait until it listens, then start the client; returns immediately after."""
        self._check_not_started()
        require_tool("iperf3")
        require_netns(self.client_netns)
        require_netns(self.server_netns)
        self._launch(BackgroundProcess(self.server_netns, self.server_argv()), self.port, "tcp",
                     lambda: BackgroundProcess(self.client_netns, self.client_argv()))

    def wait(self, timeout: float | None = None) -> Iperf3Result:
        """Wait for the client to finish (default: duration + margin) and parse its result; always cleans up."""
        client = self._finish(timeout, self.duration_s)
        if not client.stdout.strip() and client.stderr.strip():
            msg = client.first_error_line()
            if "not found" in msg or "No such file" in msg:
                raise EnvironmentProblem(f"iperf3 could not run in {self.client_netns}: {msg}")
            raise CniprofError(f"iperf3 client failed: {msg}")
        return parse_client_json(client.stdout)
