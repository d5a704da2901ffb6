# SPDX-License-Identifier: Apache-2.0
"""One trace run: lab (reused or built) -> hop probe attached -> generator -> snapshots -> detach -> lab removed.

Everything acquired goes on one ExitStack, so an error or Ctrl-C at any step releases it in reverse order: the
generator is killed, BPF links are destroyed, and a lab this run built is torn down. A lab that was already up
is left up.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lazy_loader

from cniprof.bpf.build import object_path
from cniprof.cni import registry
from cniprof.cni.model import PATHS as MODEL_PATHS
from cniprof.cni.model import Chain, Model
from cniprof.cni.topology import Pod, Topology
from cniprof.errors import EnvironmentProblem, UsageError
from cniprof.files import write_text
from cniprof.interrupts import sigterm_interrupts
from cniprof.lab import cleanup, kernel, realize, saved
from cniprof.preload import load_now
from cniprof.probes.duty import DEFAULT_BUDGET_PCT, FULL_BUDGET_PCT, DutyCycle
from cniprof.probes.hops import HopProbe
from cniprof.probes.hops import object_name as hops_object_name
from cniprof.probes.hops_abi import ATTACH_POINT
from cniprof.probes.plan import DEFAULT_EVENTS, Plan, build_plan
from cniprof.probes.sampling import CALIBRATION_S, choose_sample_every
from cniprof.run import pod_to_service
from cniprof.traffic import ping as ping_mod
from cniprof.traffic import udp_burst
from cniprof.traffic.iperf3 import Iperf3
from cniprof.traffic.netns import require_tool
from cniprof.traffic.ping import Ping
from cniprof.traffic.udp_burst import UdpBurst

if TYPE_CHECKING:
    import numpy as np

    from cniprof.analysis import record as record_mod
    from cniprof.bpf import features
    from cniprof.lab import kubeproxy, tunings
    from cniprof.node import detect, state
    from cniprof.probes import cpu, nfhooks
    from cniprof.run import coordinator, inject
else:  # imported on first use: what only the other modes (--agents, --nf, --cpu, --cni auto) or the end of the run
    # need loads then, not before the probes are attached (issue 15: attached within 0.5 s of the start); what the
    # run itself uses until its traffic ends is loaded at its start (load_now in run())
    np = lazy_loader.load("numpy")
    record_mod = lazy_loader.load("cniprof.analysis.record", suppress_warning=True)
    features = lazy_loader.load("cniprof.bpf.features", suppress_warning=True)
    tunings = lazy_loader.load("cniprof.lab.tunings", suppress_warning=True)
    detect = lazy_loader.load("cniprof.node.detect", suppress_warning=True)
    state = lazy_loader.load("cniprof.node.state", suppress_warning=True)
    cpu = lazy_loader.load("cniprof.probes.cpu", suppress_warning=True)
    nfhooks = lazy_loader.load("cniprof.probes.nfhooks", suppress_warning=True)
    coordinator = lazy_loader.load("cniprof.run.coordinator", suppress_warning=True)
    inject = lazy_loader.load("cniprof.run.inject", suppress_warning=True)

log = logging.getLogger(__name__)

TRAFFIC = ("iperf3", "udp", "ping", "none")
AGENTS = ("none", "per-node")  # per-node: one node agent process per lab node (cniprof.run.coordinator)
EXACT_COUNT = ("udp", "ping")  # --count packets: every one must be traced
PATHS = (*MODEL_PATHS, pod_to_service.PATH)
__all__ = ["PATHS", "TRAFFIC", "TraceOptions", "TraceResult", "pick_pods", "preflight", "run"]
BTF_PATH = "/sys/kernel/btf/vmlinux"
MAX_DURATION_S = 24 * 3600.0  # a day: longer runs are mistakes (1e9 s would never end)
SEND_INTERVAL_S = {"udp": udp_burst.INTERVAL_S, "ping": ping_mod.INTERVAL_S}


@dataclass
class TraceOptions:
    cni: str = "flannel"
    path: str | None = "cross-node"  # None: the model's default path (cross-node, or its only path)
    src: str | None = None
    dst: str | None = None
    duration_s: float = 10.0
    traffic: str = "iperf3"
    count: int = 100  # packets for udp/ping
    payload_size: int = 64  # bytes per udp datagram
    sample_every: int = 0  # 1 in N packets; 0 = auto (N = 1 unless the offered load is high)
    stale_ms: float = 1000.0
    interval_s: float = 1.0  # snapshot period for on_update (the live view: cli.trace.LIVE_INTERVAL_S)
    events: tuple[str, ...] = DEFAULT_EVENTS  # probe events; FULL_EVENTS adds netif_rx (veth backlog)
    cpu: bool = False  # also sample CPU stacks and softirq time (cniprof.probes.cpu)
    cpu_freq_hz: int = 999
    # --cni auto: trace the live node as detected (cniprof.node.detect) instead of building a lab
    root: str = "/"  # the node's root directory for its CNI configuration and flannel's subnet.env
    node_netns: str | None = None  # the node's network namespace (None: the one cniprof runs in)
    topology: Topology | None = None  # set by preflight for --cni auto: the detected node, traced as found
    nf: bool = False  # also time every netfilter hook of the node namespaces (cniprof.probes.nfhooks)
    services: int | None = None  # dummy kube-proxy services for pod-to-service (None: 0 there, else unused)
    # pod-to-service with the kube-proxy service already installed by the caller (a study installs it before its
    # generator starts): used as is, neither installed nor removed here
    service: kubeproxy.Applied | None = None
    command: str | None = None  # the command line, recorded in summary.json
    agents: str = "none"  # per-node: trace through one node agent per node, the wire hop timed across clocks
    test_clock_offset_ns: int = 0  # TEST ONLY (--agents per-node): added to the destination node agent's clock
    # the probe's own cost as % of the node's kernel CPU time; below 100 the hop programs are duty-cycled to hold
    # it (cniprof.probes.duty); exact-count traffic (udp, ping) is always traced whole
    overhead_budget_pct: float = DEFAULT_BUDGET_PCT
    ready_file: str | None = None  # written (with the attach time) once the probes are attached


@dataclass
class TraceResult:
    """A finished trace: its record (plain data for analysis and export) and the live objects that made it."""

    record: record_mod.TraceRecord
    model: Model
    topology: Topology
    plan: Plan
    lab_created: bool


def preflight(opts: TraceOptions) -> Model:
    """Check everything a user can fix before touching the kernel; one clear error each.

    Resolves opts.path when it is None (the model's default path).
    """
    if opts.cni.strip().lower() == "auto" and opts.topology is None:
        opts.cni, opts.topology, _ = detect.resolve(Path(opts.root), opts.node_netns)
    model = registry.parse(opts.cni)
    if opts.path is None:
        opts.path = model.default_path if opts.topology is None else "same-node"  # a detected node is one node
    if opts.path not in PATHS:
        raise UsageError(f"unknown --path {opts.path!r}; supported: {', '.join(PATHS)}")
    chain_for(model, opts.path)  # UsageError naming the paths the model has
    if opts.service is not None and (opts.path != pod_to_service.PATH or opts.services is not None):
        raise UsageError(f"an installed service is for --path {pod_to_service.PATH} without --services")
    if opts.services is not None and opts.path != pod_to_service.PATH:
        raise UsageError(f"--services adds kube-proxy services for --path {pod_to_service.PATH}, not {opts.path}")
    if opts.traffic not in TRAFFIC:
        raise UsageError(f"unknown --traffic {opts.traffic!r}; supported: {', '.join(TRAFFIC)}")
    if not (math.isfinite(opts.duration_s) and 0 < opts.duration_s <= MAX_DURATION_S):
        raise UsageError(f"--duration must be a number of seconds above 0 and at most {MAX_DURATION_S:.0f}, "
                         f"not {opts.duration_s:g}")
    if opts.count < 1:
        raise UsageError(f"--count must be at least 1, not {opts.count}")
    _check_agents(opts)
    if send_time_s(opts.traffic, opts.count) > MAX_DURATION_S:
        raise UsageError(f"--count {opts.count} {opts.traffic} packets take "
                         f"{send_time_s(opts.traffic, opts.count):.0f} s to send ({SEND_INTERVAL_S[opts.traffic]:g} s apart), longer than a run may last "
                         f"({MAX_DURATION_S:.0f} s): lower --count")
    if not 0 < opts.overhead_budget_pct <= FULL_BUDGET_PCT:
        raise UsageError(f"--overhead-budget takes a percentage above 0 and at most 100, not "
                         f"{opts.overhead_budget_pct:g}")
    kernel.require(model.spec, model.requires)
    if os.geteuid() != 0:
        raise EnvironmentProblem("tracing needs root (BPF programs and network namespaces): run with sudo")
    if not os.path.exists(BTF_PATH):
        raise EnvironmentProblem(f"{BTF_PATH} is missing: cniprof needs a kernel built with CONFIG_DEBUG_INFO_BTF=y")
    tools = {"iperf3": ["iperf3"], "ping": ["ping"]}.get(opts.traffic, []) + ["ip"]
    for tool in tools:
        require_tool(tool)
    object_path(hops_object_name())  # raises with a hint when the BPF objects were not built
    if opts.cpu:
        cpu.check_freq(opts.cpu_freq_hz)
        object_path("cpu")
    if opts.path == pod_to_service.PATH:
        pod_to_service.check(opts.traffic, opts.services or 0, opts.count)
    if opts.nf:
        object_path("nfhooks")
        nfhooks.select_attach(_features())  # no usable attach type: one line, before the lab is touched
    return model


def _check_agents(opts: TraceOptions) -> None:
    """--agents per-node needs two nodes and packets both ways (the clock offset comes from both directions)."""
    if opts.agents not in AGENTS:
        raise UsageError(f"unknown --agents {opts.agents!r}; supported: {', '.join(AGENTS)}")
    if opts.agents == "none":
        if opts.test_clock_offset_ns:
            raise UsageError("a test clock offset applies to --agents per-node only")
        return
    if opts.topology is not None:
        raise UsageError("--agents per-node traces lab nodes; a detected live node is one node (use the default "
                         "tracer, or trace --k8s on a cluster)")
    if pod_to_service.chain_path(opts.path or "") != "cross-node":
        raise UsageError(f"--agents per-node traces paths between two nodes; --path {opts.path} stays on one node "
                         "(drop --agents)")
    if opts.traffic == "udp":
        raise UsageError("--agents per-node needs packets both ways to estimate the clock offset between the "
                         "nodes, and --traffic udp sends one way: use --traffic iperf3 or ping (replies)")


def send_time_s(traffic: str, count: int) -> float:
    """How long --count packets of `traffic` take to send (0 for the generators that run for --duration)."""
    return count * SEND_INTERVAL_S.get(traffic, 0.0)


def chain_for(model: Model, path: str) -> Chain:
    """The model chain a trace of `path` follows (pod-to-service: the cross-node one)."""
    if path == pod_to_service.PATH and model.no_services:
        raise UsageError(f"--path {path} is not available on {model.spec}: {model.no_services}")
    try:
        return model.chain(pod_to_service.chain_path(path))
    except UsageError:
        if path != pod_to_service.PATH:
            raise
        raise UsageError(f"--path {path} follows the cross-node chain, which {model.spec} does not have "
                         f"(it supports: {', '.join(model.paths)})") from None


@functools.cache
def _features() -> features.Features:
    """One feature calibration per process (preflight runs twice: in the CLI and in run())."""

    return features.calibrate()


def pick_pods(topo: Topology, path: str, src: str | None, dst: str | None) -> tuple[Pod, Pod]:
    """The traced pair. pod-to-host: the pod and its own node's stack (`topo.host_endpoint`); dst may name that
    node. Otherwise two pods on different nodes (cross-node) or the same node (same-node)."""
    if path == "pod-to-host":
        return _pod_and_host(topo, src, dst)
    path = pod_to_service.chain_path(path)
    try:
        a = topo.pod(src) if src else topo.pods[0]
        if dst:
            b = topo.pod(dst)
        else:
            same = path == "same-node"
            b = next(p for p in topo.pods if p.name != a.name and (p.node == a.node) == same)
    except (KeyError, StopIteration):
        names = ", ".join(p.name for p in topo.pods)
        raise UsageError(f"no such pod pair for {path}; pods in the lab: {names}") from None
    if (a.node == b.node) != (path == "same-node"):
        raise UsageError(f"{a.name} and {b.name} do not form a {path} pair")
    return a, b


def _pod_and_host(topo: Topology, src: str | None, dst: str | None) -> tuple[Pod, Pod]:
    try:
        a = topo.pod(src) if src else topo.pods[0]
    except (KeyError, IndexError):
        names = ", ".join(p.name for p in topo.pods)
        raise UsageError(f"no pod {src!r} for pod-to-host; pods in the lab: {names}") from None
    if dst and dst != a.node:
        raise UsageError(f"pod-to-host goes from {a.name} to its own node {a.node}, not to {dst!r}")
    return a, topo.host_endpoint(a.node)


def _lab(stack: ExitStack, model: Model, opts: TraceOptions) -> tuple[Topology, bool]:
    """The lab (or the live node), this run's alone until the stack unwinds: a second run is refused."""
    command = opts.command or f"cniprof trace --cni {model.spec}"
    if opts.topology is not None:  # --cni auto: the node as detected; nothing to build or remove
        stack.enter_context(saved.in_use(command, saved.node_run_file(opts.node_netns)))
        return opts.topology, False
    stack.enter_context(saved.in_use(command))  # before the build: a second trace must not reuse a lab half up
    topo, created = realize.up(model.cni, model.mode)
    if created:
        def down() -> None:
            cleanup.teardown()
        stack.callback(down)
    return topo, created


def _generator(opts: TraceOptions, a: Pod, b: Pod, topo: Topology, dst_ip: str | None = None):
    """dst_ip: where a sends (default b's IP; a ClusterIP in front of b for pod-to-service)."""
    service = dst_ip is not None
    dst_ip = dst_ip or b.ip
    if opts.traffic == "iperf3":
        return Iperf3(a.netns, b.netns, dst_ip, opts.duration_s)
    if opts.traffic == "udp":
        # to a service: every datagram from its own socket, a new connection that walks the NAT rules
        return UdpBurst(a.netns, b.netns, dst_ip, opts.count, payload_size=opts.payload_size,
                        flows=opts.count if service else 1)
    if opts.traffic == "ping":
        return Ping(a.netns, b.ip, opts.count)
    return None


def _run_time(opts: TraceOptions, gen: Any) -> float:
    """How long the run lasts: --duration, or for a packet count the time the generator needs to send it."""
    if opts.traffic == "udp":
        return max(opts.duration_s, gen.send_time_s + 2.0)
    if opts.traffic == "ping":
        return max(opts.duration_s, opts.count * gen.interval_s + 2.0)
    return opts.duration_s


def _running(gen: Any) -> bool:
    running = getattr(gen, "running", None)
    return bool(running()) if callable(running) else True


def _result_dict(tool: str, res: Any) -> dict[str, Any]:
    if res is None:
        return {"tool": tool, "throughput_bps": None, "retransmits": None}
    d = {k: v for k, v in vars(res).items() if k != "raw"} if hasattr(res, "__dict__") else {}
    d.setdefault("throughput_bps", None)
    d.setdefault("retransmits", None)
    return {"tool": tool, **d}


def _injected_service(topo: Topology, opts: TraceOptions) -> kubeproxy.Applied | None:
    """The service a `lab inject services=N` left in the lab (traced as it is), or None."""
    service = inject.injected_service(topo)
    if service is not None and opts.services is not None:
        raise UsageError(f"the lab has injected {service.dummy_services} services; drop --services to trace them, "
                         "or `cniprof lab down` first")
    return service


def _cpu_sampler(stack: ExitStack, opts: TraceOptions) -> cpu.CpuSampler | None:
    """The CPU sampler beside the hop probe (--cpu), released by the same stack; None without --cpu."""
    if not opts.cpu:
        return None

    sampler = cpu.CpuSampler(object_path("cpu"), opts.cpu_freq_hz)
    stack.callback(sampler.close)
    sampler.start()
    return sampler


def _nf_probe(stack: ExitStack, opts: TraceOptions, topo: Topology, addresses: list[str]) -> nfhooks.NfHookProbe | None:
    """The netfilter probe on the lab's node namespaces (--nf), released by the same stack; None without --nf."""
    if not opts.nf:
        return None

    probe = nfhooks.NfHookProbe.for_topology(topo, addresses=addresses, features=_features())
    stack.callback(probe.close)
    probe.start()
    return probe


def _hop_probe(opts: TraceOptions, model: Model, chain: Chain, plan: Plan, a: Pod, b: Pod
               ) -> HopProbe | coordinator.Coordinator:
    """The single tracer, or (--agents per-node) a coordinator of one agent per node with the same face; its
    merged snapshot carries the `clock` and `agents` blocks of summary.json."""
    if opts.agents == "per-node":
        return coordinator.for_pair(a, b, chain, plan.directions, cni=model.spec, path=opts.path or "cross-node",
                                    events=opts.events, sample_every=opts.sample_every or 1, stale_ms=opts.stale_ms,
                                    test_clock_offset_ns=opts.test_clock_offset_ns)
    return HopProbe(object_path(hops_object_name()), plan.points, plan.expected, plan.directions,
                    stale_ms=opts.stale_ms, sample_every=opts.sample_every or 1)


POLL_S = 0.25  # how soon the end of the traffic or of the duration is seen
CPU_READ_S = 1.0  # CPU snapshots (symbolizing user stacks while the generators live) at most this often


def run(opts: TraceOptions, on_update: Callable[[dict[str, Any], float], None] | None = None,
        on_cpu: Callable[[dict[str, Any]], None] | None = None, model: Model | None = None,
        after_attach: Callable[[], None] | None = None) -> TraceResult:
    """Trace once. `model`: what preflight(opts) returned when the caller already ran it (it is not repeated);
    `after_attach`: called once the probes are attached, before the traffic starts."""
    model = model or preflight(opts)
    chain = chain_for(model, opts.path)
    # what the run uses until its traffic ends loads now, before the lab and the probes (the imports deferred past
    # the attach serve the other modes and the end of the run): an interrupt that lands in an import can come out
    # as another error (numpy's first import turns it into an ImportError, an interrupted module import leaves a
    # half module behind), and the signal suite holds every phase of a run to a clean exit 130/143
    load_now(np, state, tunings, inject, *([cpu] if opts.cpu else []))
    with sigterm_interrupts(), ExitStack() as stack:
        topo, created = _lab(stack, model, opts)
        a, b = pick_pods(topo, opts.path, opts.src, opts.dst)
        plan = build_plan(topo, chain, a, b, events=opts.events)
        service, service_info = None, None
        if opts.path == pod_to_service.PATH:
            injected = None if opts.service else _injected_service(topo, opts)
            service = opts.service or injected or \
                pod_to_service.install(stack, topo, b, opts.services or 0, opts.traffic)
            pod_to_service.check_target(service, b)
            plan = pod_to_service.retarget(plan, service.cluster_ip)
            service_info = {**pod_to_service.describe(service, b), "injected": service is injected}
        probe = _hop_probe(opts, model, chain, plan, a, b)
        stack.callback(probe.close)
        probe.start()
        attach_s = process_age_s()
        # node agents trace their whole node for the whole run (each is its own process, its cost its own)
        duty = DutyCycle(probe, budget_of(opts)) if isinstance(probe, HopProbe) else None
        if duty is not None:
            stack.callback(duty.close)
            duty.start()
        if opts.ready_file is not None:  # scripts wait for this instead of polling bpftool
            write_text(Path(opts.ready_file), f"{attach_s:.3f}\n")
        if after_attach is not None:
            after_attach()
        nf = _nf_probe(stack, opts, topo, [a.ip, b.ip, *([service.cluster_ip] if service else [])])
        gen = _generator(opts, a, b, topo, service.cluster_ip if service else None)
        if gen is not None:
            stack.callback(gen.stop)
            with tunings.pinned(inject.pinned_cpus(topo)):  # softirq-one-cpu injected: client and server on CPU 0
                gen.start()
        t0, started = time.monotonic(), time.strftime("%Y-%m-%dT%H:%M:%S%z")
        sampling = {"mode": "fixed" if opts.sample_every else "auto", "every": probe.sample_every}
        if not opts.sample_every and duty is not None and not duty.full:
            # duty-cycled: the budget bounds the cost, and every packet of a window is tracked (1-in-N would only
            # trade samples for a little more of the time covered)
            sampling["duty_cycled"] = True
        elif not opts.sample_every:
            time.sleep(min(CALIBRATION_S, opts.duration_s / 4))
            elapsed, candidates = time.monotonic() - t0, probe.counter("candidates")
            budget = probe.tracked_budget_per_s
            n = choose_sample_every(candidates, elapsed, budget)
            sampling.update(every=n, calibration_s=round(elapsed, 3), candidates=candidates, budget_per_s=budget)
            if n > 1:
                probe.set_sample_every(n)
                probe.reset_stats()
        # after calibration, so that CPU time and hop packet counts cover the same window
        sampler = _cpu_sampler(stack, opts)
        state_start = state.capture(topo, config=False)
        cpu_read = 0.0
        deadline = t0 + _run_time(opts, gen)
        result = None
        next_update = t0 + opts.interval_s
        while True:
            # the end (deadline, generator done) is seen within POLL_S; updates come every interval_s
            now = time.monotonic()
            time.sleep(max(0.0, min(POLL_S, deadline - now, next_update - now)))
            now = time.monotonic()
            done = gen is not None and not _running(gen)
            end = done or now >= deadline
            if sampler is not None and now - cpu_read >= CPU_READ_S:
                cpu_read, cpu_snapshot = now, sampler.snapshot()
                if on_cpu is not None:
                    on_cpu(cpu_snapshot)
            if on_update is not None and (now >= next_update or end):
                on_update(probe.snapshot(), now - t0)
            if now >= next_update:
                next_update = now + opts.interval_s
            if end:
                break
        if gen is not None:
            result = gen.wait(timeout=max(5.0, opts.duration_s))
        # let the last packets of the run reach their final points before the last read
        time.sleep(0.2)
        overhead: dict[str, Any] = {"attach_s": round(attach_s, 3)}
        if duty is not None:
            overhead.update(duty.stop())
            if duty.error is not None:
                raise EnvironmentProblem(f"duty cycling stopped: {duty.error}") from duty.error
        else:
            overhead.update(mode="agents", budget_pct=None)  # not measured here: the agents' cost is their own
        # CPU first: the hop snapshot's one-off work (reading the kernel's BTF) is not datapath cost
        cpu_snapshot = sampler.snapshot() if sampler is not None else None
        probe.freeze()  # one consistent cut: every started packet is in exactly one category of the accounting
        snapshot = probe.snapshot()
        nf_snapshot = nf.snapshot() if nf is not None else None
        node_state = state.window(state_start, state.capture(topo))
        record = record_mod.TraceRecord(
            cni=model.cni, mode=model.mode, path=opts.path or "", snapshot=snapshot,
            duration_s=time.monotonic() - t0, traffic=_result_dict(opts.traffic, result),
            probes=tuple(ATTACH_POINT[p] for p in probe.attached), sampling=sampling, cpu=cpu_snapshot,
            nf=nf_snapshot, nodestate=node_state, service=service_info, injections=tuple(topo.injections),
            where=_where(opts, model, created), command=opts.command, started=started, overhead=overhead)
        return TraceResult(record, model, topo, plan, created)


def budget_of(opts: TraceOptions) -> float:
    """The budget the run keeps: exact-count traffic is traced whole, whatever was asked."""
    return FULL_BUDGET_PCT if opts.traffic in EXACT_COUNT else opts.overhead_budget_pct


def process_age_s() -> float:
    """Seconds since this process started (its start in /proc/self/stat, clock ticks since boot)."""
    with open("/proc/self/stat") as f:
        starttime = int(f.read().rsplit(")", 1)[1].split()[19])
    return time.clock_gettime(time.CLOCK_BOOTTIME) - starttime / os.sysconf("SC_CLK_TCK")


def _where(opts: TraceOptions, model: Model, created: bool) -> str:
    if opts.topology is not None:
        return f"live node {opts.node_netns or 'root namespace'} (detected {model.spec})"
    return f"lab {'built and removed' if created else 'reused, left up'}"
