# SPDX-License-Identifier: Apache-2.0
"""A scenario generator spec -> a running generator between two endpoints, and its result -> flat metrics.

Why flat metrics: every tool reports different numbers; the study's tables, statistics and graphs only need
(metric, value) pairs with units in the names (`_us`, `_bps`, `_per_s`, `_pct`), so one code path handles all.
The values are the ones the tools printed (the parsers' fields), renamed, never recomputed, except ping's
p50/p99, which iputils does not print: they are order statistics of its per-reply RTTs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cniprof.cni.topology import Pod
from cniprof.traffic import sockperf
from cniprof.traffic.connect_rate import ConnectRate
from cniprof.traffic.http import HttpBench
from cniprof.traffic.iperf3 import Iperf3
from cniprof.traffic.netns import Generator, require_tool
from cniprof.traffic.ping import Ping
from cniprof.traffic.sockperf import Sockperf


@dataclass(frozen=True)
class GeneratorSpec:
    """A generator as a scenario or `tune --generator` names it: the tool and its parameters."""

    name: str
    tool: str
    params: dict[str, Any] = field(default_factory=dict)


# the metric each tool is compared on first (tables, graphs), and whether higher is better
PRIMARY: dict[str, tuple[str, bool]] = {
    "ping": ("latency_p50_us", False),
    "iperf3": ("throughput_bps", True),
    "sockperf": ("latency_p50_us", False),
    "wrk": ("requests_per_s", True),
    "connect_rate": ("connects_per_s", True),
}
# seconds between a generator's start and its traffic (sockperf's warm-up stage)
STARTUP_S = {"sockperf": sockperf.WARMUP_S}
PORTS = {"iperf3": 5231, "sockperf": 11311, "wrk": 8380, "connect_rate": 5431}
# the programs each tool runs in the pods (connect_rate is cniprof's own Python)
PROGRAMS = {"ping": ("ping",), "iperf3": ("iperf3",), "sockperf": ("sockperf",), "wrk": ("nginx", "wrk"),
            "connect_rate": ()}


def require_programs(specs: Iterable[GeneratorSpec]) -> None:
    """Every program the generators run is installed: checked before any lab is built, one line naming the
    Debian package of the first one missing."""
    for spec in specs:
        for program in (*PROGRAMS.get(spec.tool, ()), "ip"):
            require_tool(program)


class _Iperf3Len(Iperf3):
    """iperf3 with -l (message / datagram length), which the tracer's Iperf3 does not need."""

    def __init__(self, *args: Any, length: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.length = length

    def client_argv(self) -> list[str]:
        argv = super().client_argv()
        return argv + ["-l", str(self.length)] if self.length else argv


def every_service_port() -> list[tuple[int, str]]:
    """Every (port, protocol) any generator can send to a ClusterIP, whatever its parameters (a service installed
    once for several runs, e.g. `lab inject services=N`)."""
    return [(port, "tcp") for port in PORTS.values()] + [(PORTS["sockperf"], "udp"), (PORTS["iperf3"], "udp")]


def service_ports(spec: GeneratorSpec) -> list[tuple[int, str]]:
    """The (port, protocol) pairs a ClusterIP must forward for this generator (ping: none, it cannot use one)."""
    if spec.tool == "ping":
        return []
    port = PORTS[spec.tool]
    if spec.tool == "sockperf":
        return [(port, spec.params.get("proto", "tcp"))]
    if spec.tool == "iperf3" and spec.params.get("udp"):
        return [(port, "tcp"), (port, "udp")]  # iperf3's control connection is TCP on the same port
    return [(port, "tcp")]


def make(spec: GeneratorSpec, a: Pod, b: Pod, duration_s: float, dst_ip: str | None = None) -> Generator:
    """The generator for spec, from endpoint a (client) to endpoint b (server), sending to dst_ip (default b.ip;
    a ClusterIP in front of b for pod-to-service)."""
    if dst_ip is not None and spec.tool == "ping":
        raise ValueError("ping cannot go to a ClusterIP")  # the scenario validator refuses it first
    gen = _make(spec, a, b, duration_s)
    gen.dst_ip = dst_ip  # the server still binds b.ip (cniprof.traffic.netns.ServerClient.dst_ip)
    return gen


def _make(spec: GeneratorSpec, a: Pod, b: Pod, duration_s: float) -> Generator:
    p = spec.params
    if spec.tool == "ping":
        interval = float(p.get("interval_s", 0.2))
        return Ping(a.netns, b.ip, count=max(1, int(duration_s / interval)), interval_s=interval,
                    payload_size=p.get("size"))
    if spec.tool == "iperf3":
        return _Iperf3Len(a.netns, b.netns, b.ip, duration_s, port=PORTS["iperf3"], streams=p.get("streams", 1),
                          udp=p.get("udp", False), bitrate=p.get("bitrate"), length=p.get("length"))
    if spec.tool == "sockperf":
        return Sockperf(a.netns, b.netns, b.ip, duration_s, tcp=p.get("proto", "tcp") == "tcp",
                        msg_size=p.get("msg_size", 64), port=PORTS["sockperf"])
    if spec.tool == "wrk":
        return HttpBench(a.netns, b.netns, b.ip, duration_s, body_bytes=p.get("body", 0),
                         connections=p.get("connections", 4), threads=p.get("threads", 1), port=PORTS["wrk"])
    if spec.tool == "connect_rate":
        return ConnectRate(a.netns, b.netns, b.ip, duration_s, port=PORTS["connect_rate"])
    raise ValueError(f"no generator for tool {spec.tool!r}")  # the scenario validator lists the tools


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def metrics(tool: str, result: Any) -> dict[str, float | None]:
    """The result's numbers under common names (see module docstring)."""
    if tool == "ping":
        rtts = [v * 1000 for v in result.rtts_ms.values()]
        ms = (lambda v: None if v is None else v * 1000)
        p50, p99 = _pct(rtts, 0.5), _pct(rtts, 0.99)
        return {"latency_p50_us": p50, "latency_p99_us": p99, "latency_avg_us": ms(result.avg_ms),
                "latency_min_us": ms(result.min_ms), "latency_max_us": ms(result.max_ms), "loss_pct": result.loss_pct}
    if tool == "iperf3":
        return {"throughput_bps": result.throughput_bps, "retransmits": result.retransmits,
                "loss_pct": result.lost_percent}
    if tool == "sockperf":
        return {"latency_p50_us": result.p50_us, "latency_p99_us": result.p99_us, "latency_p999_us": result.p999_us,
                "latency_avg_us": result.avg_us, "observations": result.observations}
    if tool == "wrk":
        return {"requests_per_s": result.requests_per_s, "throughput_bps": result.transfer_bytes_per_s * 8,
                "latency_p50_us": result.p50_us, "latency_p99_us": result.p99_us,
                "latency_avg_us": result.latency_avg_us, "errors": result.errors}
    if tool == "connect_rate":
        return {"connects_per_s": result.connects_per_s, "latency_p50_us": result.p50_us,
                "latency_p99_us": result.p99_us, "errors": result.errors}
    raise ValueError(f"no metrics for tool {tool!r}")
