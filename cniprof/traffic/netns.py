# SPDX-License-Identifier: Apache-2.0
"""Run bounded background commands inside named network namespaces (`ip netns exec NS ...`).

Why this module: every traffic generator starts processes in pod namespaces while a tracer runs, and must never
leave them behind. Each process here
  - runs in its own session (so stop() can kill it and anything it spawned as one process group),
  - gets SIGKILL from the kernel if the Python thread that started it dies (setpriv --pdeathsig; note this
    means: start generators from a thread that outlives them, normally the main thread),
  - is registered for an atexit sweep, and
  - writes stdout/stderr to unlinked temporary files (no pipe can fill up and stall it while nobody reads).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from cniprof.errors import CniprofError, EnvironmentProblem, UsageError
from cniprof.netns_exec import argv_in

if TYPE_CHECKING:
    from typing_extensions import Self

NETNS_DIR = Path("/run/netns")
KILL_GRACE_S = 1.0

# /proc/net/{tcp,udp}[6] socket states
TCP_LISTEN = "0A"
UDP_UNCONNECTED = "07"


def require_netns(name: str) -> None:
    """Fail early with a clear message when a namespace does not exist (ip would print a vaguer error)."""
    if not name or "/" in name:
        raise UsageError(f"invalid network namespace name {name!r}")
    if not (NETNS_DIR / name).exists():
        raise UsageError(f"network namespace {name!r} does not exist (no {NETNS_DIR / name})")


# Debian packages of the tools whose name is not their package's
DEBIAN_PACKAGES = {"ip": "iproute2", "ping": "iputils-ping", "nginx": "nginx-light"}


def require_tool(tool: str) -> str:
    """Path of an executable, or an EnvironmentProblem that says how to get it."""
    path = shutil.which(tool)
    if not path:
        raise EnvironmentProblem(f"{tool} not found: install the Debian package {DEBIAN_PACKAGES.get(tool, tool)}")
    return path


_live: weakref.WeakSet[BackgroundProcess] = weakref.WeakSet()
_live_lock = threading.Lock()


class BackgroundProcess:
    """One command running in a namespace, with its output collected in temp files."""

    def __init__(self, netns: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.netns = netns
        self.argv = argv
        self.env = env
        self._proc: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None
        self._err: IO[bytes] | None = None
        self.stdout = ""
        self.stderr = ""

    def start(self) -> None:
        require_netns(self.netns)
        # Kept open across calls (closed in _collect), so no `with` block.
        self._out = tempfile.TemporaryFile()  # noqa: SIM115
        self._err = tempfile.TemporaryFile()  # noqa: SIM115
        env = dict(os.environ, LC_ALL="C", **(self.env or {}))
        try:
            self._proc = subprocess.Popen(
                argv_in(self.netns, self.argv),
                stdin=subprocess.DEVNULL,
                stdout=self._out,
                stderr=self._err,
                start_new_session=True,
                env=env,
            )
        except OSError as e:
            self._close_files()
            raise EnvironmentProblem(f"cannot run {self.argv[0]} in {self.netns}: {e.strerror}") from e
        with _live_lock:
            _live.add(self)

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise CniprofError(f"{self.argv[0]} was not started")
        return self._proc.pid

    def poll(self) -> int | None:
        """Exit status, or None while running."""
        return None if self._proc is None else self._proc.poll()

    def wait(self, timeout: float) -> int:
        """Wait for exit; on timeout kill it and raise. Collects stdout/stderr either way."""
        if self._proc is None:
            raise CniprofError(f"{self.argv[0]} was not started")
        try:
            rc = self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as e:
            self.kill()
            raise CniprofError(f"{self.argv[0]} in {self.netns} did not finish within {timeout:.1f} s") from e
        self._collect()
        return rc

    def send_signal(self, sig: int) -> None:
        """Send sig to the process group (the command and anything it started)."""
        if self._proc is not None and self._proc.poll() is None:
            try:
                os.killpg(self._proc.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        """SIGTERM, then SIGKILL after a grace period; always reaps. Safe to call repeatedly.

        The group is only signalled while its leader is unreaped, so a recycled pid is never hit.
        """
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=KILL_GRACE_S)
            except subprocess.TimeoutExpired:
                self.send_signal(signal.SIGKILL)
                self._proc.wait()
        self._collect()

    def _collect(self) -> None:
        if self._out is not None and not self._out.closed:
            self._out.seek(0)
            self.stdout = self._out.read().decode(errors="replace")
        if self._err is not None and not self._err.closed:
            self._err.seek(0)
            self.stderr = self._err.read().decode(errors="replace")
        self._close_files()
        with _live_lock:
            _live.discard(self)

    def _close_files(self) -> None:
        for f in (self._out, self._err):
            if f is not None and not f.closed:
                f.close()

    def first_error_line(self) -> str:
        """The first non-empty line of stderr (for one-line error messages)."""
        for line in self.stderr.splitlines():
            if line.strip():
                return line.strip()
        return f"exit status {self.poll()}"


@atexit.register
def _kill_leftovers() -> None:
    """Last line of defence when a caller forgot stop(): nothing survives the Python process."""
    with _live_lock:
        procs = list(_live)
    for proc in procs:
        proc.kill()


def socket_bound(pid: int, port: int, proto: str = "tcp") -> bool:
    """True when the namespace of pid has a listening TCP (or bound UDP) socket on port.

    /proc/<pid>/net/* shows the network namespace of that process, so this checks readiness without
    entering the namespace and without connecting (a connection would consume `iperf3 -s -1`).
    """
    state = TCP_LISTEN if proto == "tcp" else UDP_UNCONNECTED
    for table in (proto, proto + "6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == state and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


def wait_bound(proc: BackgroundProcess, port: int, proto: str, timeout: float) -> None:
    """Poll until proc's namespace has the socket bound, the process exits, or timeout (then kill + raise)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            proc.kill()
            raise CniprofError(
                f"{proc.argv[0]} in {proc.netns} exited before listening on {proto} port {port}: "
                f"{proc.first_error_line()}"
            )
        if socket_bound(proc.pid, port, proto):
            return
        time.sleep(0.02)
    proc.kill()
    raise CniprofError(f"{proc.argv[0]} in {proc.netns} did not listen on {proto} port {port} within {timeout} s")


LISTEN_TIMEOUT_S = 20.0  # a server not listening by then is broken (a loaded 2-CPU machine took 6 s to start one)
FINISH_MARGIN_S = 10.0  # time past a client's nominal run before it counts as hung
FINISH_GRACE_S = 3.0


class Generator:
    """Protocol shared by the generators: start() returns at once, running() polls, wait(timeout) -> result,
    stop() kills (idempotent); `with Gen(...) as g: r = g.wait()` starts and always stops."""

    def start(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def running(self) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    def stop(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ServerClient(Generator):
    """A server in one namespace and, once it listens, a client in another: the start, poll, wait and stop that
    iperf3, sockperf, nginx+wrk and the connect-rate pair share. Subclasses build the two processes, say how long
    the client nominally runs, and parse its output."""

    name = "generator"
    # where the client sends: None = the server's own IP; a ClusterIP in front of the server for pod-to-service
    # (the server still binds its pod IP, which kube-proxy's DNAT delivers to)
    dst_ip: str | None = None
    _server: BackgroundProcess | None = None
    _client: BackgroundProcess | None = None
    _started_at: float = 0.0

    def __init__(self, client_netns: str, server_netns: str, server_ip: str, duration_s: float, port: int) -> None:
        if duration_s <= 0:
            raise UsageError(f"{self.name} duration must be positive, not {duration_s}")
        self.client_netns = client_netns
        self.server_netns = server_netns
        self.server_ip = server_ip
        self.duration_s = duration_s
        self.port = port

    @property
    def target_ip(self) -> str:
        return self.dst_ip or self.server_ip

    def _check_not_started(self) -> None:
        if self._client is not None:
            raise CniprofError(f"{self.name} generator already started")

    def _launch(self, server: BackgroundProcess, port: int, proto: str,
                client: Callable[[], BackgroundProcess]) -> None:
        """Start the server, wait until it listens, then start the client; on any failure stop both."""
        try:
            self._server = server
            server.start()
            wait_bound(server, port, proto, LISTEN_TIMEOUT_S)
            self._client = client()
            self._client.start()
        except BaseException:
            self.stop()
            raise
        self._started_at = time.monotonic()

    def running(self) -> bool:
        """True while the client is still running (the test is not over)."""
        return self._client is not None and self._client.poll() is None

    def _finish(self, timeout: float | None, nominal_s: float) -> BackgroundProcess:
        """Wait for the client (default: its nominal run time + margin), then stop both ends; returns the client."""
        if self._client is None:
            raise CniprofError(f"{self.name} generator was not started")
        if timeout is None:
            # at least FINISH_GRACE_S: a caller that waits only after a long step of its own (a study traces first)
            # must not declare a client hung that is merely being reaped late
            timeout = max(FINISH_GRACE_S, nominal_s + FINISH_MARGIN_S - (time.monotonic() - self._started_at))
        try:
            self._client.wait(timeout)
        finally:
            self.stop()
        return self._client

    def stop(self) -> None:
        """Kill client and server (if still running). Idempotent."""
        for proc in (self._client, self._server):
            if proc is not None:
                proc.kill()


def print_result(role: str, measure: Callable[[], dict[str, Any]]) -> int:
    """The end of a helper script run inside a namespace (udp_burst, connect_rate): its result as one JSON line
    on stdout, or {"error": ...} with exit status 1 when the socket work failed; the generator parses it."""
    try:
        result = measure()
    except OSError as e:
        print(json.dumps({"error": f"{role}: {e.strerror or e}"}), flush=True)
        return 1
    print(json.dumps(result), flush=True)
    return 0
