# SPDX-License-Identifier: Apache-2.0
"""Exactly N UDP datagrams from one namespace to another, counted at the receiver.

Why: a known packet count is what lets the tracer's numbers be reconciled (N packets sent, N seen at each
hop, N delivered). Datagrams are paced (1 ms apart by default) so socket buffers never drop any; a loss then
means the datapath dropped it.

Both ends are this module run as a program inside the namespaces:
  ip netns exec NS python -m cniprof.traffic.udp_burst recv --port P --count N --timeout T
  ip netns exec NS python -m cniprof.traffic.udp_burst send --dst IP --port P --count N --size S
Each prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from cniprof.errors import CniprofError, UsageError
from cniprof.traffic.netns import (
    LISTEN_TIMEOUT_S,
    BackgroundProcess,
    Generator,
    print_result,
    require_netns,
    wait_bound,
)

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
BIND_TIMEOUT_S = LISTEN_TIMEOUT_S
RECV_GRACE_S = 1.0  # after the sender is done, how long stragglers may take to arrive
MAX_PAYLOAD = 65507  # largest UDP payload over IPv4
MAX_FLOWS = 4096  # one socket each, all open during the burst


@dataclass(frozen=True)
class UdpBurstResult:
    """sent/received datagram counts; bytes are payload bytes."""

    sent: int
    received: int
    payload_size: int
    sent_bytes: int
    received_bytes: int
    duration_s: float

    @property
    def lost(self) -> int:
        return self.sent - self.received


def parse_end(text: str, role: str, stderr: str = "") -> dict[str, Any]:
    """The JSON line printed by one end; a one-line CniprofError if it printed none."""
    for line in reversed(text.strip().splitlines()):
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict):
            if doc.get("error"):
                raise CniprofError(f"udp burst {role} failed: {doc['error']}")
            return doc
    detail = next((line.strip() for line in reversed(stderr.splitlines()) if line.strip()), "no output")
    raise CniprofError(f"udp burst {role} printed no result: {detail}")


class UdpBurst(Generator):
    """Send count datagrams of payload_size bytes from sender_netns to dst_ip:port (in receiver_netns).

    src_port pins the sender's source port so a tracer can filter on the exact 5-tuple (0: any).
    flows > 1 sends datagram i from the (i % flows)-th of `flows` sockets (source ports src_port, src_port + 1, ...
    or distinct ephemeral ones): each is its own conntrack entry, so with flows == count every datagram is the
    first of a connection and walks the NAT rules (kube-proxy's per-connection cost), like DNS queries do.
    """

    def __init__(
        self,
        sender_netns: str,
        receiver_netns: str,
        dst_ip: str,
        count: int,
        payload_size: int = 64,
        port: int = 5300,
        interval_s: float = 0.001,
        src_port: int = 0,
        flows: int = 1,
    ) -> None:
        if count < 1:
            raise UsageError(f"udp burst count must be at least 1, not {count}")
        if not 0 <= payload_size <= MAX_PAYLOAD:
            raise UsageError(f"udp payload size must be 0..{MAX_PAYLOAD}, not {payload_size}")
        if interval_s < 0:
            raise UsageError(f"udp burst interval must not be negative, not {interval_s}")
        if not 1 <= flows <= MAX_FLOWS:
            raise UsageError(f"udp burst flows must be 1..{MAX_FLOWS}, not {flows}")
        if src_port and src_port + flows - 1 > 65535:
            raise UsageError(f"udp burst source ports {src_port}..{src_port + flows - 1} exceed 65535")
        self.sender_netns = sender_netns
        self.receiver_netns = receiver_netns
        self.dst_ip = dst_ip
        self.count = count
        self.payload_size = payload_size
        self.port = port
        self.interval_s = interval_s
        self.src_port = src_port
        self.flows = flows
        self._recv: BackgroundProcess | None = None
        self._send: BackgroundProcess | None = None
        self._started_at = 0.0

    @property
    def send_time_s(self) -> float:
        """Nominal time to send the whole burst."""
        return self.count * self.interval_s

    def _argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "cniprof.traffic.udp_burst", *args]

    def _env(self) -> dict[str, str]:
        """Make this very package importable by the child even when it is not pip-installed."""
        paths = [str(PACKAGE_ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        return {"PYTHONPATH": os.pathsep.join(paths)}

    def recv_argv(self) -> list[str]:
        timeout = self.send_time_s + BIND_TIMEOUT_S + 30.0  # the receiver bounds itself too
        return self._argv("recv", "--port", str(self.port), "--count", str(self.count), "--timeout", f"{timeout}")

    def send_argv(self) -> list[str]:
        argv = self._argv(
            "send", "--dst", self.dst_ip, "--port", str(self.port), "--count", str(self.count),
            "--size", str(self.payload_size), "--interval", str(self.interval_s), "--src-port", str(self.src_port),
        )
        return argv + ["--flows", str(self.flows)] if self.flows > 1 else argv

    def start(self) -> None:
        """Start the receiver, wait until its socket is bound, then start the sender; returns immediately."""
        if self._send is not None:
            raise CniprofError("udp burst already started")
        require_netns(self.sender_netns)
        require_netns(self.receiver_netns)
        self._recv = BackgroundProcess(self.receiver_netns, self.recv_argv(), env=self._env())
        self._recv.start()
        try:
            wait_bound(self._recv, self.port, "udp", BIND_TIMEOUT_S)
            self._send = BackgroundProcess(self.sender_netns, self.send_argv(), env=self._env())
            self._send.start()
        except BaseException:
            self.stop()
            raise
        self._started_at = time.monotonic()

    def running(self) -> bool:
        """True while the sender is still sending (the receiver is finished by wait())."""
        return self._send is not None and self._send.poll() is None

    def wait(self, timeout: float | None = None) -> UdpBurstResult:
        """Wait for the sender, give stragglers RECV_GRACE_S, then read both counts; always cleans up."""
        if self._send is None or self._recv is None:
            raise CniprofError("udp burst was not started")
        if timeout is None:
            timeout = self.send_time_s + 10.0 + RECV_GRACE_S
        deadline = self._started_at + timeout
        try:
            self._send.wait(max(0.0, deadline - time.monotonic()))
            sent = parse_end(self._send.stdout, "sender", self._send.stderr)
            try:
                self._recv.wait(min(RECV_GRACE_S, max(0.0, deadline - time.monotonic())))
            except CniprofError:
                pass  # not all arrived: kill() below sent SIGTERM, the receiver printed what it counted
            received = parse_end(self._recv.stdout, "receiver", self._recv.stderr)
        finally:
            self.stop()
        return UdpBurstResult(
            sent=int(sent["sent"]),
            received=int(received["received"]),
            payload_size=self.payload_size,
            sent_bytes=int(sent["bytes"]),
            received_bytes=int(received["bytes"]),
            duration_s=float(sent["seconds"]),
        )

    def stop(self) -> None:
        """Kill both ends (if still running). Idempotent."""
        for proc in (self._send, self._recv):
            if proc is not None:
                proc.kill()


# ----- the two ends, run inside the namespaces -----


def _family(ip: str) -> int:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def open_receiver(port: int, bind: str = "") -> socket.socket:
    """The receiving socket, bound (so datagrams are queued from here on), with a large receive buffer."""
    sock = socket.socket(_family(bind) if bind else socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((bind, port))
    return sock


def count_datagrams(sock: socket.socket, count: int, timeout: float, stopped: Callable[[], bool]) -> dict[str, Any]:
    """Count datagrams until count arrived, stopped() or timeout; returns the counts."""
    sock.settimeout(0.1)
    received = nbytes = 0
    deadline = time.monotonic() + timeout
    while received < count and not stopped() and time.monotonic() < deadline:
        try:
            data = sock.recv(MAX_PAYLOAD + 1)
        except (socket.timeout, InterruptedError):
            continue
        received += 1
        nbytes += len(data)
    return {"received": received, "bytes": nbytes}


def run_receiver(port: int, count: int, timeout: float, bind: str = "") -> dict[str, Any]:
    """The `recv` end: like count_datagrams, and SIGTERM ends the count early (the result is still printed)."""
    term = threading.Event()
    signal.signal(signal.SIGTERM, lambda _sig, _frame: term.set())
    with open_receiver(port, bind) as sock:
        return count_datagrams(sock, count, timeout, term.is_set)


def run_sender(dst: str, port: int, count: int, size: int, interval: float, src_port: int = 0,
               flows: int = 1) -> dict[str, Any]:
    """Send count datagrams on a fixed schedule (start + i * interval), so timing errors do not accumulate.

    Datagram i leaves from socket i % flows (see UdpBurst: one conntrack entry per socket).
    """
    socks = []
    try:
        for k in range(flows):
            sock = socket.socket(_family(dst), socket.SOCK_DGRAM)
            socks.append(sock)
            if src_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("", src_port + k))
            elif flows > 1:
                sock.bind(("", 0))  # all open at once: distinct ephemeral ports, distinct flows
        return _send(socks, dst, port, count, size, interval)
    finally:
        for sock in socks:
            sock.close()


def _send(socks: list[socket.socket], dst: str, port: int, count: int, size: int, interval: float) -> dict[str, Any]:
    payload = bytes(size)
    sent = nbytes = 0
    start = time.monotonic()
    for i in range(count):
        delay = start + i * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        nbytes += socks[i % len(socks)].sendto(payload, (dst, port))
        sent += 1
    seconds = time.monotonic() - start
    return {"sent": sent, "bytes": nbytes, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cniprof.traffic.udp_burst", description="paced UDP burst")
    sub = parser.add_subparsers(dest="role", required=True)
    recv = sub.add_parser("recv", help="count datagrams")
    recv.add_argument("--port", type=int, required=True)
    recv.add_argument("--count", type=int, required=True)
    recv.add_argument("--timeout", type=float, default=60.0)
    recv.add_argument("--bind", default="")
    send = sub.add_parser("send", help="send datagrams")
    send.add_argument("--dst", required=True)
    send.add_argument("--port", type=int, required=True)
    send.add_argument("--count", type=int, required=True)
    send.add_argument("--size", type=int, default=64)
    send.add_argument("--interval", type=float, default=0.001)
    send.add_argument("--src-port", type=int, default=0)
    send.add_argument("--flows", type=int, default=1)
    args = parser.parse_args(argv)
    if args.role == "recv":
        return print_result(args.role, lambda: run_receiver(args.port, args.count, args.timeout, args.bind))
    return print_result(args.role, lambda: run_sender(args.dst, args.port, args.count, args.size, args.interval,
                                                      args.src_port, args.flows))


if __name__ == "__main__":
    sys.exit(main())
