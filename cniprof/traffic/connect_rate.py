# SPDX-License-Identifier: Apache-2.0
"""TCP connect rate: how many connections per second one client completes through the datapath.

Why a small Python connector rather than a tool: sockperf has no connect-rate mode and wrk reuses
connections. Each connection is a full handshake (SYN, SYN-ACK, ACK: one conntrack entry and, on a service
path, one walk of the NAT rules), then an abortive close (SO_LINGER 0: RST, so the client keeps no TIME_WAIT
entry and a run of tens of thousands of connects does not exhaust its ephemeral ports). The connector is
sequential (one connection in flight): the rate is 1 / (connect latency + Python overhead), which compares
models on the same machine; it is not the machine's maximum connection rate.

Both ends run as this module inside the namespaces:
  ip netns exec NS python -m cniprof.traffic.connect_rate serve --bind IP --port P --timeout T
  ip netns exec NS python -m cniprof.traffic.connect_rate connect --dst IP --port P --duration D
Each prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cniprof.errors import CniprofError
from cniprof.traffic.netns import (
    FINISH_MARGIN_S,
    LISTEN_TIMEOUT_S,
    BackgroundProcess,
    ServerClient,
    print_result,
    require_netns,
)

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
CONNECT_TIMEOUT_S = 1.0
_LINGER_RST = struct.pack("ii", 1, 0)


@dataclass(frozen=True)
class ConnectRateResult:
    """Completed connects, failures, and connect() latency percentiles in microseconds."""

    connects: int
    errors: int
    duration_s: float
    connects_per_s: float
    p50_us: float | None
    p99_us: float | None
    first_error: str = ""


def parse_result(text: str, stderr: str = "") -> ConnectRateResult:
    """The connector's JSON line; a one-line CniprofError when it printed none or reported an error."""
    for line in reversed(text.strip().splitlines()):
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if not isinstance(doc, dict):
            continue
        if doc.get("error"):
            raise CniprofError(f"connect rate failed: {doc['error']}")
        if int(doc.get("connects", 0)) == 0 and doc.get("first_error"):
            raise CniprofError(f"connect rate: no connection succeeded: {doc['first_error']}")
        return ConnectRateResult(
            connects=int(doc["connects"]),
            errors=int(doc["errors"]),
            duration_s=float(doc["duration_s"]),
            connects_per_s=float(doc["connects_per_s"]),
            p50_us=doc.get("p50_us"),
            p99_us=doc.get("p99_us"),
            first_error=str(doc.get("first_error", "")),
        )
    detail = next((line.strip() for line in reversed(stderr.splitlines()) if line.strip()), "no output")
    raise CniprofError(f"connect rate printed no result: {detail}")


class ConnectRate(ServerClient):
    """Sequential TCP connects from client_netns to server_ip:port (served in server_netns) for duration_s."""

    name = "connect rate"

    def __init__(self, client_netns: str, server_netns: str, server_ip: str, duration_s: float,
                 port: int = 5400) -> None:
        super().__init__(client_netns, server_netns, server_ip, duration_s, port)

    def _argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "cniprof.traffic.connect_rate", *args]

    def _env(self) -> dict[str, str]:
        paths = [str(PACKAGE_ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        return {"PYTHONPATH": os.pathsep.join(paths)}

    def start(self) -> None:
        self._check_not_started()
        require_netns(self.client_netns)
        require_netns(self.server_netns)
        timeout = self.duration_s + LISTEN_TIMEOUT_S + FINISH_MARGIN_S  # the server bounds itself too
        server = BackgroundProcess(self.server_netns, self._argv(
            "serve", "--bind", self.server_ip, "--port", str(self.port), "--timeout", f"{timeout}"), env=self._env())
        self._launch(server, self.port, "tcp", lambda: BackgroundProcess(self.client_netns, self._argv(
            "connect", "--dst", self.target_ip, "--port", str(self.port), "--duration", f"{self.duration_s}"),
            env=self._env()))

    def wait(self, timeout: float | None = None) -> ConnectRateResult:
        client = self._finish(timeout, self.duration_s)
        return parse_result(client.stdout, client.stderr)


# ----- the two ends, run inside the namespaces -----


def run_server(bind: str, port: int, timeout: float) -> dict[str, Any]:
    """Accept and close until SIGTERM or timeout; the count is informative (the client's is the result)."""
    term = threading.Event()
    signal.signal(signal.SIGTERM, lambda _sig, _frame: term.set())
    accepted = 0
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as srv:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((bind, port))
        srv.listen(1024)
        srv.settimeout(0.1)
        deadline = time.monotonic() + timeout
        while not term.is_set() and time.monotonic() < deadline:
            try:
                conn, _ = srv.accept()
            except (socket.timeout, InterruptedError):
                continue
            except OSError:
                continue  # the client's RST can abort a connection still in the accept queue
            conn.close()
            accepted += 1
    return {"accepted": accepted}


def run_connector(dst: str, port: int, duration: float) -> dict[str, Any]:
    """Connect, close with RST, repeat until duration; connect() latency percentiles over all successes."""
    latencies: list[float] = []
    errors = 0
    first_error = ""
    start = time.monotonic()
    end = start + duration
    while (now := time.monotonic()) < end:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(CONNECT_TIMEOUT_S)
        try:
            sock.connect((dst, port))
            latencies.append(time.monotonic() - now)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        except OSError as e:
            errors += 1
            first_error = first_error or (e.strerror or str(e))
            time.sleep(0.01)  # a refused connect returns at once: do not spin
        finally:
            sock.close()
    seconds = time.monotonic() - start
    latencies.sort()

    def pct(q: float) -> float | None:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e6, 1) if latencies else None

    return {"connects": len(latencies), "errors": errors, "duration_s": seconds,
            "connects_per_s": len(latencies) / seconds if seconds > 0 else 0.0,
            "p50_us": pct(0.5), "p99_us": pct(0.99), "first_error": first_error}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cniprof.traffic.connect_rate", description="TCP connect rate")
    sub = parser.add_subparsers(dest="role", required=True)
    serve = sub.add_parser("serve", help="accept and close connections")
    serve.add_argument("--bind", default="")
    serve.add_argument("--port", type=int, required=True)
    serve.add_argument("--timeout", type=float, default=60.0)
    connect = sub.add_parser("connect", help="count completed connects")
    connect.add_argument("--dst", required=True)
    connect.add_argument("--port", type=int, required=True)
    connect.add_argument("--duration", type=float, required=True)
    args = parser.parse_args(argv)
    if args.role == "serve":
        return print_result(args.role, lambda: run_server(args.bind, args.port, args.timeout))
    return print_result(args.role, lambda: run_connector(args.dst, args.port, args.duration))


if __name__ == "__main__":
    sys.exit(main())
