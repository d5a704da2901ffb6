# SPDX-License-Identifier: Apache-2.0
"""HTTP: nginx serving one fixed-size body in a pod namespace, wrk loading it from another (`--latency`).

Why nginx + wrk: the talk's HTTP benchmark; small bodies measure request rate (per-packet and per-connection
costs of the datapath), large ones approach TCP throughput with HTTP framing.

nginx runs from a private prefix in a temporary directory (its own config, pid file, logs, temp paths and the
generated body files), listens only on the pod IP, and is killed with its process group; the directory is removed
in stop(). Nothing in /etc/nginx or /var/log/nginx is read or written (`-p`, `-c`, `-e` all point inside it).
wrk's text report is parsed: Requests/sec, Transfer/sec, the latency distribution (50/75/90/99 %), socket errors
and non-2xx/3xx responses.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cniprof.errors import CniprofError, EnvironmentProblem, UsageError
from cniprof.files import fresh_sibling
from cniprof.traffic.netns import BackgroundProcess, ServerClient, require_netns, require_tool

MAX_BODY = 1 << 30

_TIME_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}
_SIZE_UNITS = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}
_TIME = r"([\d.]+)(us|ms|s|m|h)"
_LAT = re.compile(r"^\s*Latency\s+" + _TIME + r"\s+" + _TIME + r"\s+" + _TIME, re.MULTILINE)
_DIST = re.compile(r"^\s*(50|75|90|99)%\s+" + _TIME, re.MULTILINE)
_REQS = re.compile(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h), ([\d.]+)(B|KB|MB|GB|TB) read")
_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_TPS = re.compile(r"Transfer/sec:\s+([\d.]+)(B|KB|MB|GB|TB)")
_SOCKERR = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")

NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    server {{
        listen {ip}:{port} reuseport;
        root {prefix}/www;
        location / {{ default_type application/octet-stream; }}
    }}
}}
"""


@dataclass(frozen=True)
class WrkResult:
    """wrk's summary; latencies in microseconds, transfer in bytes/s; errors = socket errors + non-2xx/3xx."""

    requests: int
    duration_s: float
    requests_per_s: float
    transfer_bytes_per_s: float
    latency_avg_us: float
    latency_max_us: float
    p50_us: float
    p75_us: float
    p90_us: float
    p99_us: float
    socket_errors: int
    non_2xx: int

    @property
    def errors(self) -> int:
        return self.socket_errors + self.non_2xx


def _us(value: str, unit: str) -> float:
    return float(value) * _TIME_UNITS[unit]


def parse_wrk(text: str) -> WrkResult:
    """Parse `wrk --latency` output; a one-line CniprofError when it has no summary (e.g. connection refused)."""
    lat, reqs, rps, tps = _LAT.search(text), _REQS.search(text), _RPS.search(text), _TPS.search(text)
    dist = {int(p): _us(v, u) for p, v, u in _DIST.findall(text)}
    if not (lat and reqs and rps and tps) or set(dist) != {50, 75, 90, 99}:
        first = next((line.strip() for line in text.splitlines() if line.strip()), "no output")
        raise CniprofError(f"wrk printed no summary (--latency): {first}")
    sockerr = _SOCKERR.search(text)
    non2xx = _NON2XX.search(text)
    return WrkResult(
        requests=int(reqs.group(1)),
        duration_s=_us(reqs.group(2), reqs.group(3)) / 1e6,
        requests_per_s=float(rps.group(1)),
        transfer_bytes_per_s=float(tps.group(1)) * _SIZE_UNITS[tps.group(2)],
        latency_avg_us=_us(lat.group(1), lat.group(2)),
        latency_max_us=_us(lat.group(5), lat.group(6)),
        p50_us=dist[50],
        p75_us=dist[75],
        p90_us=dist[90],
        p99_us=dist[99],
        socket_errors=sum(int(x) for x in sockerr.groups()) if sockerr else 0,
        non_2xx=int(non2xx.group(1)) if non2xx else 0,
    )


class HttpBench(ServerClient):
    """nginx in server_netns serving body_bytes of zeros at http://server_ip:port/body; wrk in client_netns."""

    name = "wrk"

    def __init__(
        self,
        client_netns: str,
        server_netns: str,
        server_ip: str,
        duration_s: float,
        body_bytes: int = 0,
        connections: int = 4,
        threads: int = 1,
        port: int = 8080,
    ) -> None:
        super().__init__(client_netns, server_netns, server_ip, duration_s, port)
        if not 0 <= body_bytes <= MAX_BODY:
            raise UsageError(f"http body size must be 0..{MAX_BODY} bytes, not {body_bytes}")
        if threads < 1 or connections < threads:
            raise UsageError(f"wrk needs threads >= 1 and connections >= threads, not {threads}/{connections}")
        self.body_bytes = body_bytes
        self.connections = connections
        self.threads = threads
        self.prefix: Path | None = None
        self._started_at = 0.0

    @property
    def url(self) -> str:
        return f"http://{self.target_ip}:{self.port}/body"

    def _prepare(self) -> Path:
        """The private nginx prefix: config, body file, temp paths; world-readable so nginx's worker can serve."""
        # named before it is made: stop() removes it even when an interrupt lands inside the mkdir
        self.prefix = prefix = fresh_sibling(Path(tempfile.gettempdir()) / "cniprof-nginx", "")
        prefix.mkdir(mode=0o700)
        prefix.chmod(0o755)
        (prefix / "tmp").mkdir()
        (prefix / "www").mkdir(mode=0o755)
        with open(prefix / "www" / "body", "wb") as f:
            f.truncate(self.body_bytes)  # zeros; sparse is fine, nginx reads it through the page cache
        (prefix / "www" / "body").chmod(0o644)
        (prefix / "nginx.conf").write_text(NGINX_CONF.format(prefix=prefix, ip=self.server_ip, port=self.port))
        return prefix

    def server_argv(self, prefix: Path) -> list[str]:
        return ["nginx", "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", str(prefix / "error.log")]

    def client_argv(self) -> list[str]:
        seconds = max(1, int(-(-self.duration_s // 1)))
        return ["wrk", "-t", str(self.threads), "-c", str(self.connections), "-d", f"{seconds}s",
                "--timeout", "2s", "--latency", self.url]

    def start(self) -> None:
        self._check_not_started()
        require_tool("nginx")
        require_tool("wrk")
        require_netns(self.client_netns)
        require_netns(self.server_netns)
        try:
            prefix = self._prepare()
        except BaseException:
            self.stop()
            raise
        self._launch(BackgroundProcess(self.server_netns, self.server_argv(prefix)), self.port, "tcp",
                     lambda: BackgroundProcess(self.client_netns, self.client_argv()))

    def wait(self, timeout: float | None = None) -> WrkResult:
        client = self._finish(timeout, self.duration_s)
        if "Requests/sec" not in client.stdout:
            msg = client.first_error_line() if client.stderr.strip() else client.stdout.strip()
            if "exec of" in msg:
                raise EnvironmentProblem(f"wrk could not run in {self.client_netns}: {msg}")
            raise CniprofError(f"wrk {self.url} failed: {msg.splitlines()[0] if msg else 'no output'}")
        return parse_wrk(client.stdout)

    def stop(self) -> None:
        """Kill wrk and nginx (process groups), then remove the prefix directory. Idempotent."""
        super().stop()
        if self.prefix is not None and os.path.isdir(self.prefix):
            shutil.rmtree(self.prefix, ignore_errors=True)
        self.prefix = None
