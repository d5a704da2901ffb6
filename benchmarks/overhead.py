#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""What tracing costs the traffic it watches, cniprof beside the tools a user would reach for, on one lab and load.

Tracers (each compared with untraced runs in pairs, in alternating order so a steady drift cancels):
  cniprof       `cniprof trace --traffic none` at its defaults (overhead budget 2 %: duty-cycled)
  cniprof-full  the same with --overhead-budget 100 (every packet of the run)
  cniprof@PCT   the same with --overhead-budget PCT (a budget sweep: cniprof@0.5,cniprof@1,cniprof@2,...)
  cniprof-agents  the same with --agents per-node: one node agent process per node, each tracing its node whole,
                and the coordinator (the agents' combined cost, as on two real nodes)
  perf          `perf record -a` of the same tracepoints cniprof attaches to
  bpftrace      benchmarks/hops.bt: per-hop skb timing the bpftrace way (address-keyed timestamps, a histogram
                per device)
Loads: iperf3 TCP throughput (one stream, pod-a -> pod-c across the flannel VXLAN lab) and sockperf TCP
ping-pong p50 (request/response latency). Each is reported as traced/untraced, median over the pairs.

cniprof runs as its own command, exactly as a user runs it, so every traced run goes through run.trace and the one
export (report.export.export_trace): the benchmark reads the attach time, coverage, own cost and each program's
ns/event from the run's summary.json, and cniprof's peak RSS from the kernel's rusage of the process.

The machine is shared: run it under the root lock (`flock /tmp/cniprof-root.lock ...`); it prints the load
average before and after, since other work on the machine moves every number.
perf and bpftrace are needed for their rows only (Debian: linux-perf, bpftrace); a missing tool skips its row.

Usage (root): .venv/bin/python benchmarks/overhead.py [--pairs 7] [--duration 4] [--tracers cniprof,...]
              [--loads iperf3,rr] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from the work tree, like the tests
    sys.path.insert(0, str(ROOT))

from cniprof.cni.topology import Pod
from cniprof.errors import CniprofError, EnvironmentProblem, UsageError
from cniprof.interrupts import sigterm_interrupts
from cniprof.lab import cleanup, realize
from cniprof.run import trace
from cniprof.traffic.iperf3 import Iperf3
from cniprof.traffic.sockperf import WARMUP_S, Sockperf

TRACERS = ("cniprof", "cniprof-full", "cniprof-agents", "perf", "bpftrace")
LOADS = ("iperf3", "rr")
# the tracepoints cniprof attaches to by default (its ATTACH_POINT table), for perf's row
PERF_EVENTS = ("net:net_dev_queue", "net:netif_receive_skb", "skb:skb_copy_datagram_iovec", "skb:consume_skb",
               "skb:kfree_skb")
HOPS_BT = Path(__file__).resolve().with_name("hops.bt")
PAUSE_S = 0.5  # between runs: let sockets and backlogs drain
ATTACH_TIMEOUT_S = 30.0
GOAL_RATIO, GOAL_RR = 0.98, 1.03


@dataclass
class Traced:
    """What a traced run left besides the load's own number."""

    attach_s: float | None = None
    peak_rss_mb: float | None = None
    overhead: dict[str, Any] = field(default_factory=dict)  # cniprof's summary.json overhead block


@dataclass
class Pair:
    tracer: str
    load: str
    pair: int
    untraced: float  # bits/s (iperf3) or p50 µs (rr)
    traced: float
    traced_first: bool
    info: Traced

    @property
    def ratio(self) -> float:
        return self.traced / self.untraced if self.untraced else float("nan")


# ------------------------------------------------------------------------------------------------ loads


def _load(load: str, a: Pod, b: Pod, duration_s: float, port: int) -> float:
    """One run of the load: iperf3 receiver throughput (bits/s) or sockperf TCP ping-pong p50 (µs)."""
    if load == "iperf3":
        gen: Any = Iperf3(a.netns, b.netns, b.ip, duration_s, port=port)
    else:
        gen = Sockperf(a.netns, b.netns, b.ip, duration_s, tcp=True, port=port)
    try:
        gen.start()
        res = gen.wait()
    finally:
        gen.stop()
    return float(res.throughput_bps if load == "iperf3" else res.p50_us)


def _load_s(load: str, duration_s: float) -> float:
    """How long a load runs (sockperf is silent for its warm-up first)."""
    return duration_s + (WARMUP_S if load == "rr" else 0.0) + 1.0


# ------------------------------------------------------------------------------------------------ tracers


class Tracer:
    """A tracer process started before the load and stopped after it."""

    def __init__(self, name: str, seconds: float, work: Path) -> None:
        self.name, self.seconds, self.work = name, seconds, work
        self.proc: subprocess.Popen | None = None
        self.export = work / "export"
        self.ready = work / "ready"
        self.info = Traced()

    def argv(self) -> list[str]:
        secs = f"{self.seconds:.1f}"
        if self.name.startswith("cniprof"):
            argv = [sys.executable, "-m", "cniprof", "trace", "--traffic", "none", "--duration", secs,
                    "--no-ui", "--export", str(self.export), "--ready-file", str(self.ready)]
            if self.name.startswith("cniprof@"):
                return argv + ["--overhead-budget", self.name.partition("@")[2]]
            return argv + {"cniprof-full": ["--overhead-budget", "100"],
                           "cniprof-agents": ["--agents", "per-node"]}.get(self.name, [])
        if self.name == "perf":
            events = [x for e in PERF_EVENTS for x in ("-e", e)]
            return ["perf", "record", "-q", "-a", *events, "-o", str(self.work / "perf.data"), "--", "sleep", secs]
        return ["timeout", "-s", "INT", "-k", "10", secs, "bpftrace", str(HOPS_BT)]  # KILL 10 s after INT

    def start(self) -> None:
        shutil.rmtree(self.export, ignore_errors=True)
        self.ready.unlink(missing_ok=True)
        t0 = time.monotonic()
        out = open(self.work / "out.txt", "w")  # noqa: SIM115 - the child's, closed when it ends
        self.proc = subprocess.Popen(self.argv(), stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                     start_new_session=True)
        out.close()
        deadline = t0 + ATTACH_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CniprofError(f"{self.name} exited ({self.proc.returncode}) before attaching: "
                                   f"{(self.work / 'out.txt').read_text()[-400:]}")
            if self._attached(t0):
                # cniprof measures it itself, from its process start; bpftrace: until it says it is attaching
                self.info.attach_s = (float(self.ready.read_text()) if self.name.startswith("cniprof") else
                                      None if self.name == "perf" else time.monotonic() - t0)
                return
            time.sleep(0.02)
        self.stop()
        raise CniprofError(f"{self.name} did not attach within {ATTACH_TIMEOUT_S:.0f} s")

    def _attached(self, t0: float) -> bool:
        if self.name.startswith("cniprof"):
            return self.ready.is_file() and self.ready.read_text().strip() != ""
        if self.name == "bpftrace":
            return "Attaching" in (self.work / "out.txt").read_text()
        # perf record has no ready signal: give it a second, more than its start-up takes here
        return time.monotonic() - t0 > 1.0

    def wait(self) -> None:
        """Wait for the tracer to end by itself (cniprof, perf: their duration; bpftrace: its timeout)."""
        assert self.proc is not None
        _, status, usage = os.wait4(self.proc.pid, 0)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        if self.name.startswith("cniprof"):
            self.info.peak_rss_mb = usage.ru_maxrss / 1024.0  # KiB on Linux
            if self.proc.returncode != 0:
                raise CniprofError(f"{self.name} failed ({self.proc.returncode}): "
                                   f"{(self.work / 'out.txt').read_text()[-600:]}")
            summary = json.loads((self.export / "summary.json").read_text())
            self.info.overhead = summary.get("overhead") or {}
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None


def _budget_tracer(name: str) -> bool:
    """cniprof@PCT: cniprof at --overhead-budget PCT."""
    base, _, pct = name.partition("@")
    try:
        return base == "cniprof" and 0.0 < float(pct) <= 100.0
    except ValueError:
        return False


def available(name: str) -> str | None:
    """Why a tracer cannot run here, or None."""
    if name == "perf" and not shutil.which("perf"):
        return "perf is not installed (Debian: linux-perf)"
    if name == "bpftrace" and not shutil.which("bpftrace"):
        return "bpftrace is not installed (Debian: bpftrace)"
    return None


def traced_run(tracer: str, load: str, a: Pod, b: Pod, duration_s: float, port: int, work: Path) -> tuple[float, Traced]:
    t = Tracer(tracer, _load_s(load, duration_s) + 1.0, work)
    try:
        t.start()
        value = _load(load, a, b, duration_s, port)
        t.wait()
    finally:
        t.stop()
    return value, t.info


# ------------------------------------------------------------------------------------------------ summary


def summarize(pairs: list[Pair]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tracer in dict.fromkeys(p.tracer for p in pairs):
        mine = [p for p in pairs if p.tracer == tracer]
        row: dict[str, Any] = {}
        for load in LOADS:
            ratios = [p.ratio for p in mine if p.load == load]
            if ratios:
                row[load] = {"median_ratio": statistics.median(ratios), "ratios": ratios}
        attach = [p.info.attach_s for p in mine if p.info.attach_s is not None]
        rss = [p.info.peak_rss_mb for p in mine if p.info.peak_rss_mb is not None]
        row["attach_s_median"] = statistics.median(attach) if attach else None
        row["peak_rss_mb_max"] = max(rss) if rss else None
        # the agents' runs have no budget block: their cost is in the throughput ratio and the agents' RSS
        ovs = [p.info.overhead for p in mine if p.info.overhead.get("coverage") is not None]
        if ovs:
            row["coverage_median"] = statistics.median(o["coverage"] for o in ovs)
            own = [o["own_cost_pct"] for o in ovs if o.get("own_cost_pct") is not None]
            row["own_cost_pct_median"] = statistics.median(own) if own else None
            progs: dict[str, list[int]] = {}
            for o in ovs:
                for name, s in (o.get("programs") or {}).items():
                    acc = progs.setdefault(name, [0, 0])
                    acc[0] += s["run_time_ns"]
                    acc[1] += s["run_cnt"]
            row["ns_per_event"] = {n: round(t / c, 1) for n, (t, c) in progs.items() if c}
            tot_t, tot_c = sum(t for t, _ in progs.values()), sum(c for _, c in progs.values())
            row["ns_per_event_all"] = round(tot_t / tot_c, 1) if tot_c else None
            dispatch = [o["dispatch_ns"] for o in ovs if o.get("dispatch_ns")]
            row["dispatch_ns_median"] = statistics.median(dispatch) if dispatch else None
        out[tracer] = row
    return out


def report(summary: dict[str, Any], header: str) -> str:
    lines = [header, "", (f"{'tracer':<13} {'throughput t/u':>15} {'TCP RR p50 t/u':>15} {'attach s':>9} "
                         f"{'peak RSS MB':>11} {'coverage':>9} {'own cost':>9} {'ns/event':>9}")]
    for tracer, row in summary.items():
        thr = row.get("iperf3", {}).get("median_ratio")
        rr = row.get("rr", {}).get("median_ratio")
        cov, own = row.get("coverage_median"), row.get("own_cost_pct_median")
        att, rss, ns = row["attach_s_median"], row["peak_rss_mb_max"], row.get("ns_per_event_all")
        lines.append(
            f"{tracer:<13} {'-' if thr is None else f'{thr:.3f}':>15} {'-' if rr is None else f'{rr:.3f}':>15} "
            f"{'-' if att is None else f'{att:.2f}':>9} {'-' if rss is None else f'{rss:.0f}':>11} "
            f"{'-' if cov is None else f'{100 * cov:.0f} %':>9} {'-' if own is None else f'{own:.2f} %':>9} "
            f"{'-' if ns is None else ns:>9}")
    lines.append("")
    for tracer, row in summary.items():
        for load in LOADS:
            if load in row:
                lines.append(f"{tracer} {load} pair ratios: " + " ".join(f"{r:.3f}" for r in row[load]["ratios"]))
        if row.get("ns_per_event"):
            per = ", ".join(f"{n} {v}" for n, v in row["ns_per_event"].items())
            lines.append(f"{tracer} ns/event per program (bodies, stats on): {per}; dispatch around each "
                         f"~{row['dispatch_ns_median'] or 0:.0f} ns (calibrated at start)")
    d = summary.get("cniprof", {})
    if d.get("iperf3") and d.get("rr"):
        ok = d["iperf3"]["median_ratio"] >= GOAL_RATIO and d["rr"]["median_ratio"] <= GOAL_RR
        lines.append(f"goal at default settings (throughput >= {GOAL_RATIO}, TCP RR p50 <= {GOAL_RR}): "
                     f"{'met' if ok else 'MISSED'}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Overhead of cniprof (default and full coverage), perf and bpftrace on "
                                "the flannel lab: iperf3 throughput and sockperf TCP ping-pong p50, traced vs "
                                "untraced in alternating pairs.")
    p.add_argument("--pairs", type=int, default=7, help="untraced/traced pairs per tracer and load (default 7)")
    p.add_argument("--duration", type=float, default=4.0, help="seconds per load run (default 4)")
    p.add_argument("--tracers", default=",".join(TRACERS),
                   help=f"comma-separated, of {', '.join(TRACERS)}, cniprof@PCT (at --overhead-budget PCT)")
    p.add_argument("--loads", default=",".join(LOADS), help="comma-separated: iperf3 (throughput), rr (sockperf)")
    p.add_argument("--json", type=Path, metavar="OUT", help="write every measured number to OUT")
    args = p.parse_args(argv)
    args.tracers = [t for t in args.tracers.split(",") if t]
    args.loads = [x for x in args.loads.split(",") if x]
    if args.pairs < 1:
        raise UsageError(f"--pairs must be at least 1, not {args.pairs}")
    if args.duration < 1:
        raise UsageError(f"--duration must be at least 1 s (iperf3 runs whole seconds), not {args.duration}")
    for t in args.tracers:
        if t not in TRACERS and not _budget_tracer(t):
            raise UsageError(f"unknown tracer {t!r}; known: {', '.join(TRACERS)}, cniprof@PCT (0 < PCT <= 100)")
    for x in args.loads:
        if x not in LOADS:
            raise UsageError(f"unknown load {x!r}; known: {', '.join(LOADS)}")
    return args


def benchmark(args: argparse.Namespace) -> tuple[dict[str, Any], list[Pair], list[str]]:
    if os.geteuid() != 0:
        raise EnvironmentProblem("the benchmark traces a lab: run it as root")
    notes: list[str] = []
    pairs: list[Pair] = []
    with sigterm_interrupts(), ExitStack() as stack:
        topo, created = realize.up("flannel", "vxlan")
        if created:
            stack.callback(cleanup.teardown)
        a, b = trace.pick_pods(topo, "cross-node", None, None)
        work = Path(tempfile.mkdtemp(prefix="cniprof-overhead."))
        stack.callback(shutil.rmtree, work, True)
        port = 5401
        _load("iperf3", a, b, 1.0, port)  # warm-up, uncounted
        for tracer in args.tracers:
            why = available(tracer)
            if why:
                notes.append(f"{tracer} skipped: {why}")
                continue
            for load in args.loads:
                for i in range(args.pairs):
                    traced_first = i % 2 == 1
                    port += 1
                    if traced_first:
                        t, info = traced_run(tracer, load, a, b, args.duration, port, work)
                        time.sleep(PAUSE_S)
                        u = _load(load, a, b, args.duration, port + 1000)
                    else:
                        u = _load(load, a, b, args.duration, port + 1000)
                        time.sleep(PAUSE_S)
                        t, info = traced_run(tracer, load, a, b, args.duration, port, work)
                    time.sleep(PAUSE_S)
                    pairs.append(Pair(tracer, load, i, u, t, traced_first, info))
                    print(f"  {tracer:<12} {load:<6} pair {i + 1}: untraced {u:,.3g} traced {t:,.3g} "
                          f"ratio {t / u:.3f}", flush=True)
    return summarize(pairs), pairs, notes


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        load0 = os.getloadavg()
        summary, pairs, notes = benchmark(args)
        load1 = os.getloadavg()
        header = (f"cniprof overhead beside perf and bpftrace: flannel/vxlan cross-node, {args.pairs} pairs x "
                  f"{args.duration:g} s per tracer and load, {os.cpu_count()} CPUs, kernel {os.uname().release}; "
                  f"load average before {load0[0]:.2f}, after {load1[0]:.2f}")
        header = "\n".join([header, *(f"note: {n}" for n in notes)])
        print(report(summary, header))
        if args.json:
            doc = {"header": header, "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                   "summary": summary, "pairs": [{**vars(p), "info": vars(p.info), "ratio": p.ratio} for p in pairs]}
            args.json.write_text(json.dumps(doc, indent=2) + "\n")
            print(f"wrote {args.json}")
    except CniprofError as e:
        print(f"overhead: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("overhead: interrupted; tracers, generators and any lab this run built were removed", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
