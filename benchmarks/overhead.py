#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""What tracing costs the traffic it watches, cniprof beside the tools a user would reach for, on one lab and load.

Tracers (each compared with untraced traffic: by pairs of runs or by blocks of one run, see Methods):
  cniprof       `cniprof trace --traffic none` at its defaults (overhead budget 2 %: duty-cycled)
  cniprof-full  the same with --overhead-budget 100 (every packet of the run)
  cniprof@PCT   the same with --overhead-budget PCT (a budget sweep: cniprof@0.5,cniprof@1,cniprof@2,...)
  cniprof-agents  the same with --agents per-node: one node agent process per node, each tracing its node whole,
                and the coordinator (the agents' combined cost, as on two real nodes)
  perf          `perf record -a` of the same tracepoints cniprof attaches to
  bpftrace      benchmarks/hops.bt: per-hop skb timing the bpftrace way (address-keyed timestamps, a histogram
                per device)
Loads: iperf3 TCP throughput (one stream, pod-a -> pod-c across the flannel VXLAN lab) and sockperf TCP
ping-pong p50 (request/response latency). Each is reported as traced/untraced, median over the pairs (blocks).

Methods (--method):
  pairs   (default) pairs of an untraced and a traced run of the load, each its own connection, in alternating
          order so a steady drift cancels; the ratio of a pair is traced/untraced.
  blocks  iperf3 only (rr keeps pairs): ONE long iperf3 connection with 0.5 s interval reports, during which
          the tracer is started and ends in blocks: untraced, traced, untraced, traced, ..., untraced.
          An interval counts as traced when it lies wholly inside [attached, attached + duration] of a tracer,
          as untraced when no tracer process existed during it (nor in the GAP_S after one exited); the rest
          (start-up, the export after the window, the gap, the connection's first second) is not counted. A
          block's ratio is the median of its traced intervals over the untraced level at its centre, interpolated
          between the untraced blocks right before and after it (a drift cancels). One connection does not
          carry the ±8 % connection-to-connection spread of iperf3 that the pairs method has in each ratio.

cniprof runs as its own command, exactly as a user runs it, so every traced run goes through run.trace and the one
export (report.export.export_trace): the benchmark reads the attach time, coverage, own cost and each program's
ns/event from the run's summary.json, and cniprof's peak RSS from the kernel's rusage of the process.

The machine is shared: run it under the root lock (`flock /tmp/cniprof-root.lock ...`); it prints the load
average before and after, since other work on the machine moves every number.
perf and bpftrace are needed for their rows only (Debian: linux-perf, bpftrace); a missing tool skips its row.

Usage (root): .venv/bin/python benchmarks/overhead.py [--method pairs|blocks] [--pairs 7] [--duration 4]
              [--tracers cniprof,...] [--loads iperf3,rr] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import math
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
from typing import Any, Union

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
METHODS = ("pairs", "blocks")

# the blocks method (iperf3): one long connection, the tracer started and ended in blocks during it
INTERVAL_S = 0.5  # iperf3 -i: what a block is made of
CONNECT_WARMUP_S = 1.0  # the connection's first second (slow start) is never counted
GAP_S = 1.0  # after a tracer exited, before intervals count as untraced again (backlogs drain, cwnd regrows)
END_S = 1.0  # the connection runs this much past the plan
LAUNCH_BOUND_S = 0.25  # test start at most this long after the client's launch, when its exit was not seen
EXIT_TIMEOUT_S = 60.0  # a tracer not gone this long after its window is broken
OPEN_ENDED_S = 600.0  # perf and bpftrace in blocks: their own timer, never reached (SIGINT ends their window)
# a tracer's start (to attached) and end (window end to exit: cniprof's export) as planned, on the generous side
# (here cniprof took 0.3-0.9 s and 1.6-3.6 s); once blocks ran, the longest seen x PHASE_SAFETY is expected
PHASE_EST_S = {"cniprof": (1.0, 4.0), "perf": (1.5, 1.5), "bpftrace": (5.0, 2.0)}
PHASE_SAFETY = 1.1
TRACED, UNTRACED, EXCLUDED = "traced", "untraced", "excluded"


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


@dataclass
class Block:
    """One traced block of a blocks run: its traced intervals' median against the untraced level around it."""

    tracer: str
    load: str
    block: int
    untraced: float  # bits/s: the neighbours' level at the traced block's centre
    traced: float  # bits/s: median of the traced intervals
    before: float  # bits/s: median of the untraced block before / after
    after: float
    counts: tuple[int, int, int]  # intervals counted: before, traced, after
    info: Traced
    span: dict[str, float] = field(default_factory=dict)  # the tracer's times, s from the client's launch

    @property
    def ratio(self) -> float:
        return self.traced / self.untraced if self.untraced else float("nan")


Measured = Union[Pair, Block]


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
    """A tracer process started before the load and stopped after it (pairs), or during it (blocks).

    t_start, t_attached, t_exit: monotonic times of its process start (just before), of its attach as first seen
    here, and of its process reaped."""

    def __init__(self, name: str, seconds: float, work: Path) -> None:
        self.name, self.seconds, self.work = name, seconds, work
        self.proc: subprocess.Popen | None = None
        self.export = work / "export"
        self.ready = work / "ready"
        self.info = Traced()
        self.t_start = self.t_attached = self.t_exit = float("nan")

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
        # `-m cniprof` from ROOT imports this work tree's cniprof (not an installed or editable one elsewhere), and
        # so do the agents it starts
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
        t0 = self.t_start = time.monotonic()
        out = open(self.work / "out.txt", "w")  # noqa: SIM115 - the child's, closed when it ends
        self.proc = subprocess.Popen(self.argv(), stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                     start_new_session=True, env=env)
        out.close()
        deadline = t0 + ATTACH_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CniprofError(f"{self.name} exited ({self.proc.returncode}) before attaching: "
                                   f"{(self.work / 'out.txt').read_text()[-400:]}")
            if self._attached(t0):
                self.t_attached = time.monotonic()
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

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the tracer to end by itself (cniprof, perf: their duration; bpftrace: its timeout); with a
        timeout, stop it after that many seconds and fail."""
        assert self.proc is not None
        if timeout is None:
            _, status, usage = os.wait4(self.proc.pid, 0)
        else:
            deadline = time.monotonic() + timeout
            while True:
                pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() > deadline:
                    self.stop()
                    raise CniprofError(f"{self.name} did not exit within {timeout:.0f} s of its traced window")
                time.sleep(0.01)
        self.t_exit = time.monotonic()
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        if self.name.startswith("cniprof"):
            self.info.peak_rss_mb = usage.ru_maxrss / 1024.0  # KiB on Linux
            if self.proc.returncode != 0:
                raise CniprofError(f"{self.name} failed ({self.proc.returncode}): "
                                   f"{(self.work / 'out.txt').read_text()[-600:]}")
            summary = json.loads((self.export / "summary.json").read_text())
            self.info.overhead = summary.get("overhead") or {}
        self.proc = None

    def finish(self) -> None:
        """End the traced window now (blocks) and wait for the exit: cniprof ends by itself at its --duration
        (from its attach), perf and bpftrace get the SIGINT they stop on (their own timer is OPEN_ENDED_S)."""
        assert self.proc is not None
        if not self.name.startswith("cniprof"):
            os.killpg(self.proc.pid, signal.SIGINT)
        self.wait(EXIT_TIMEOUT_S)

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


# ------------------------------------------------------------------------------------------------ blocks


class IntervalIperf3(Iperf3):
    """iperf3 with interval reports every INTERVAL_S, remembering when its client was launched (monotonic and
    wall clock): the start of its test is after that, and no later than its exit minus the test's length."""

    launched: float = float("nan")
    launched_wall: float = float("nan")

    def client_argv(self) -> list[str]:
        # called right before the client is started (ServerClient._launch): the earliest its test can begin
        self.launched, self.launched_wall = time.monotonic(), time.time()
        return [*super().client_argv(), "-i", f"{INTERVAL_S:g}"]


@dataclass(frozen=True)
class Span:
    """One tracer process of a blocks run, on the monotonic clock (s)."""

    start: float  # just before its process was started
    attached: float  # its probes attached, as first seen here (a little after the fact: conservative)
    window_end: float  # the end of its traced window: attached + duration (or its exit, if that came first)
    exit: float  # its process reaped: export written, probes gone


@dataclass(frozen=True)
class Interval:
    """One iperf3 interval report on the monotonic clock. Its test's start is only known to lie between the
    client's launch and its exit minus the test's length, so the interval lies within [start, end] (a little
    wider than the interval itself): it is classified by these bounds, never by a guess inside them."""

    start: float
    end: float
    bps: float


def _interval_sums(doc: dict[str, Any]) -> list[dict[str, Any]]:
    sums = [iv["sum"] for iv in doc.get("intervals") or [] if not iv["sum"].get("omitted")]
    if not sums:
        raise CniprofError("iperf3 reported no intervals")
    return sums


def start_bounds(doc: dict[str, Any], launched: float, exited: float | None) -> tuple[float, float]:
    """When the test of an `iperf3 -c ... -J` run began (monotonic): not before the client's launch, and not
    after its exit minus the test's length (iperf3's own start time, start.timestamp.timesecs, is whole seconds);
    without a seen exit, at most LAUNCH_BOUND_S after the launch (here it is 10-15 ms)."""
    length = max(float(s["end"]) for s in _interval_sums(doc))
    latest = exited - length if exited is not None else launched + LAUNCH_BOUND_S
    return launched, max(launched, latest)


def place_intervals(doc: dict[str, Any], launched: float, exited: float | None) -> list[Interval]:
    """The intervals of an `iperf3 -c ... -J -i S` output (cniprof.traffic.iperf3's raw document), placed on the
    monotonic clock by the bounds of its test's start (the sender's throughput per interval: the client reports
    no receiver intervals)."""
    earliest, latest = start_bounds(doc, launched, exited)
    return [Interval(earliest + float(s["start"]), latest + float(s["end"]), float(s["bits_per_second"]))
            for s in _interval_sums(doc)]


def classify(iv: Interval, spans: list[Span], counted_from: float, gap_s: float = GAP_S) -> tuple[str, int]:
    """(TRACED, i): wholly inside span i's traced window; (UNTRACED, k): no tracer process existed during it, nor
    in the gap_s after one exited, and not before counted_from (k = the number of tracers before it: its untraced
    block lies between span k-1 and span k); (EXCLUDED, -1): anything else (a start-up, an export, a gap)."""
    for i, sp in enumerate(spans):
        if sp.attached <= iv.start and iv.end <= sp.window_end:
            return TRACED, i
    if iv.start < counted_from:
        return EXCLUDED, -1
    before = 0
    for sp in spans:
        if iv.start >= sp.exit + gap_s:
            before += 1
        elif iv.end > sp.start:
            return EXCLUDED, -1
    return UNTRACED, before


@dataclass(frozen=True)
class BlockRatio:
    """What one traced block measured (bits/s, None where it has no counted interval)."""

    block: int
    traced: float | None
    before: float | None
    after: float | None
    reference: float | None  # the untraced level at the traced block's centre
    counts: tuple[int, int, int]  # intervals counted: before, traced, after

    @property
    def ratio(self) -> float | None:
        if self.traced is None or not self.reference:
            return None
        return self.traced / self.reference


def _level_centre(ivs: list[Interval]) -> tuple[float | None, float]:
    """A block's level, the median of its intervals (a host's stall of a second drops one or two 0.5 s intervals
    of a block to half, traced or not: measured here, 8.4 4.5 10.3 among 14.x Gbit/s in an untraced block), and
    its centre in time."""
    if not ivs:
        return None, float("nan")
    return statistics.median(iv.bps for iv in ivs), statistics.fmean((iv.start + iv.end) / 2 for iv in ivs)


def block_ratios(intervals: list[Interval], labels: list[tuple[str, int]], n_spans: int) -> list[BlockRatio]:
    """Per traced block i: median of its traced intervals over the untraced level at its centre, interpolated in
    time between the untraced blocks i (before it) and i+1 (after it), so that a drift of the connection's
    throughput cancels even when the two are not equally far (the start-up before a window is shorter than the
    export and gap after it)."""
    groups: dict[tuple[str, int], list[Interval]] = {}
    for iv, label in zip(intervals, labels):
        groups.setdefault(label, []).append(iv)
    out = []
    for i in range(n_spans):
        t, b, a = groups.get((TRACED, i), []), groups.get((UNTRACED, i), []), groups.get((UNTRACED, i + 1), [])
        (mt, ct), (mb, cb), (ma, ca) = _level_centre(t), _level_centre(b), _level_centre(a)
        ref = None
        if mb is not None and ma is not None:
            w = min(1.0, max(0.0, (ct - cb) / (ca - cb))) if ca > cb and mt is not None else 0.5
            ref = mb + w * (ma - mb)
        out.append(BlockRatio(i, mt, mb, ma, ref, (len(b), len(t), len(a))))
    return out


def _phase_estimates(tracer: str) -> tuple[float, float]:
    return PHASE_EST_S["cniprof" if tracer.startswith("cniprof") else tracer]


def _sleep_until(t: float) -> None:
    left = t - time.monotonic()
    if left > 0:
        time.sleep(left)


def per_pair_s(duration_s: float, est_start: float, est_exit: float) -> float:
    """A tracer's start-up, its window, its exit, the gap, and the untraced block after it."""
    return est_start + duration_s + est_exit + GAP_S + duration_s


def run_seconds(n_blocks: int, duration_s: float, est_start: float, est_exit: float) -> int:
    """How long the connection of a blocks run is (iperf3 -t: whole seconds): its first second, the first
    untraced block, every traced block with what comes after it, and END_S."""
    return math.ceil(CONNECT_WARMUP_S + duration_s + n_blocks * per_pair_s(duration_s, est_start, est_exit) + END_S)


def untraced_until(block_from: float, end: float, i: int, n_blocks: int, duration_s: float, pair_s: float) -> float:
    """When untraced block i (0-based, begun at block_from) ends and tracer i starts: after duration_s and an
    even share of the time the plan has left over (there are n_blocks - i + 1 untraced blocks still to come,
    this one included); `end`: the connection's end."""
    slack = end - END_S - block_from - duration_s - (n_blocks - i) * pair_s
    return block_from + duration_s + max(0.0, slack) / (n_blocks - i + 1)


def room_for_block(now: float, end: float, pair_s: float) -> bool:
    """Whether a traced block started now still fits, an untraced block of the planned length after it (the
    connection's END_S margin may shorten that one)."""
    return end - now >= pair_s


def expected_phases(planned: tuple[float, float], seen: list[tuple[float, float]]) -> tuple[float, float]:
    """The start-up and exit the rest of a blocks run expects: as planned until a tracer ran, then the longest
    seen x PHASE_SAFETY (so the time tracers did not need is given to the untraced blocks still to come)."""
    if not seen:
        return planned
    return PHASE_SAFETY * max(s for s, _ in seen), PHASE_SAFETY * max(e for _, e in seen)


def blocks_run(tracer: str, a: Pod, b: Pod, duration_s: float, n_blocks: int, port: int, work: Path,
               notes: list[str]) -> tuple[list[Block], dict[str, Any]]:
    """One iperf3 connection with n_blocks traced blocks of duration_s in it, each between two untraced blocks
    of at least duration_s; the connection is planned long enough for all of them with the start-up, export
    and gap of each (PHASE_EST_S), the time the tracers turn out not to need spread over the untraced blocks
    still to come. Returns the blocks and a record of the run (its intervals and tracers, s from the client's
    launch) for --json."""
    planned = _phase_estimates(tracer)
    run_s = run_seconds(n_blocks, duration_s, *planned)
    seen: list[tuple[float, float]] = []  # start-up and exit of every tracer so far
    gen = IntervalIperf3(a.netns, b.netns, b.ip, run_s, port=port)
    seconds = duration_s if tracer.startswith("cniprof") else OPEN_ENDED_S
    spans: list[Span] = []
    infos: list[Traced] = []
    t: Tracer | None = None
    try:
        gen.start()
        launched = gen.launched
        end = launched + run_s  # the client's -t (whole seconds); its test starts a little after its launch
        block_from = launched + CONNECT_WARMUP_S
        for i in range(n_blocks):
            pair_s = per_pair_s(duration_s, *expected_phases(planned, seen))
            _sleep_until(untraced_until(block_from, end, i, n_blocks, duration_s, pair_s))
            if not room_for_block(time.monotonic(), end, pair_s):
                notes.append(f"{tracer}: the iperf3 connection ({run_s} s) had room for {i} of {n_blocks} traced "
                             f"blocks only (start-up and export took longer than planned)")
                break
            t = Tracer(tracer, seconds, work)
            t.start()
            _sleep_until(t.t_attached + duration_s)
            t.finish()
            sp = Span(t.t_start, t.t_attached, min(t.t_attached + duration_s, t.t_exit), t.t_exit)
            spans.append(sp)
            infos.append(t.info)
            seen.append((t.t_attached - t.t_start, t.t_exit - sp.window_end))
            print(f"  {tracer:<12} iperf3 block {i + 1}: attached {t.t_attached - t.t_start:.2f} s after its start,"
                  f" exited {t.t_exit - t.t_attached - duration_s:.2f} s after its window", flush=True)
            block_from, t = t.t_exit + GAP_S, None
        # the last untraced block: to the end of the connection, whose exit bounds its test's start
        _sleep_until(end - 0.3)
        exited: float | None = None
        if gen.running():  # else it ended before this was looking: its start is bounded by LAUNCH_BOUND_S
            while gen.running() and time.monotonic() < end + 30.0:
                time.sleep(0.005)
            exited = None if gen.running() else time.monotonic()
        res = gen.wait()
    finally:
        if t is not None:
            t.stop()
        gen.stop()
    doc = res.raw
    timesecs = (doc.get("start") or {}).get("timestamp", {}).get("timesecs")
    if isinstance(timesecs, (int, float)) and not -1.0 <= timesecs - gen.launched_wall <= 2.0:
        notes.append(f"{tracer}: iperf3's start time ({timesecs}) is not its launch (wall clock "
                     f"{gen.launched_wall:.3f}): the clock moved during the run?")
    intervals = place_intervals(doc, launched, exited)
    earliest, latest = start_bounds(doc, launched, exited)
    labels = [classify(iv, spans, launched + CONNECT_WARMUP_S) for iv in intervals]
    blocks: list[Block] = []
    for r, sp, info in zip(block_ratios(intervals, labels, len(spans)), spans, infos):
        rel = {k: round(v - launched, 3) for k, v in vars(sp).items()}
        if r.ratio is None or r.traced is None or r.before is None or r.after is None or r.reference is None:
            notes.append(f"{tracer}: block {r.block + 1} not counted (intervals before, traced, after: {r.counts})")
            continue
        blocks.append(Block(tracer, "iperf3", r.block, r.reference, r.traced, r.before, r.after, r.counts, info,
                            rel))
        print(f"  {tracer:<12} iperf3 block {r.block + 1}: untraced {r.before:,.3g} / {r.after:,.3g} traced "
              f"{r.traced:,.3g} ratio {r.ratio:.3f} (intervals {r.counts[0]}/{r.counts[1]}/{r.counts[2]})",
              flush=True)
    record = {"tracer": tracer, "load": "iperf3", "seconds": run_s, "launched_wall": round(gen.launched_wall, 3),
              "timesecs": timesecs, "exit_seen": exited is not None,
              "test_start_s": [0.0, round(latest - earliest, 3)],
              "spans": [{k: round(v - launched, 3) for k, v in vars(sp).items()} for sp in spans],
              "intervals": [[round(iv.start - launched, 3), round(iv.end - launched, 3), round(iv.bps), lab, k]
                            for iv, (lab, k) in zip(intervals, labels)]}
    return blocks, record


# ------------------------------------------------------------------------------------------------ summary


def spread(ratios: list[float]) -> dict[str, float]:
    """min, quartiles and max of the ratios (the quartiles as statistics.quantiles' inclusive method)."""
    q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1 else ratios * 3
    return {"min": min(ratios), "q1": q1, "q3": q3, "max": max(ratios)}


def summarize(pairs: list[Measured]) -> dict[str, Any]:
    """Per tracer and load, the median ratio and its spread over the pairs or blocks (whichever measured it)."""
    out: dict[str, Any] = {}
    for tracer in dict.fromkeys(p.tracer for p in pairs):
        mine = [p for p in pairs if p.tracer == tracer]
        row: dict[str, Any] = {}
        for load in LOADS:
            ratios = [p.ratio for p in mine if p.load == load]
            if ratios:
                method = "blocks" if any(isinstance(p, Block) for p in mine if p.load == load) else "pairs"
                row[load] = {"median_ratio": statistics.median(ratios), "ratios": ratios, "method": method,
                             **spread(ratios)}
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
                x = row[load]
                what = "block" if x.get("method") == "blocks" else "pair"
                lines.append(f"{tracer} {load} {what} ratios: " + " ".join(f"{r:.3f}" for r in x["ratios"]) +
                             (f" (min {x['min']:.3f}, IQR {x['q1']:.3f}-{x['q3']:.3f}, max {x['max']:.3f})"
                              if "q1" in x else ""))
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
                                "untraced in alternating pairs of runs, or (--method blocks, iperf3) in blocks of "
                                "one long connection.")
    p.add_argument("--method", default="pairs",
                   help="pairs (default): untraced/traced pairs of runs, each its own connection; blocks: iperf3 "
                        "as one long connection with the tracer started and ended in it, --pairs traced blocks "
                        "between untraced ones (the rr load keeps pairs)")
    p.add_argument("--pairs", type=int, default=7,
                   help="untraced/traced pairs per tracer and load, or traced blocks with --method blocks (default 7)")
    p.add_argument("--duration", type=float, default=4.0,
                   help="seconds per load run, or per traced window with --method blocks (default 4)")
    p.add_argument("--tracers", default=",".join(TRACERS),
                   help=f"comma-separated, of {', '.join(TRACERS)}, cniprof@PCT (at --overhead-budget PCT)")
    p.add_argument("--loads", default=",".join(LOADS), help="comma-separated: iperf3 (throughput), rr (sockperf)")
    p.add_argument("--json", type=Path, metavar="OUT", help="write every measured number to OUT")
    args = p.parse_args(argv)
    args.tracers = [t for t in args.tracers.split(",") if t]
    args.loads = [x for x in args.loads.split(",") if x]
    if args.method not in METHODS:
        raise UsageError(f"unknown --method {args.method!r}; known: {', '.join(METHODS)}")
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


def pairs_run(tracer: str, load: str, a: Pod, b: Pod, args: argparse.Namespace, port: int, work: Path
              ) -> list[Pair]:
    """--pairs pairs of an untraced and a traced run of the load, in alternating order."""
    pairs = []
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
    return pairs


def benchmark(args: argparse.Namespace) -> tuple[dict[str, Any], list[Measured], list[str], list[dict[str, Any]]]:
    """The pairs and blocks measured, their summary, notes, and the record of every blocks run."""
    if os.geteuid() != 0:
        raise EnvironmentProblem("the benchmark traces a lab: run it as root")
    notes: list[str] = []
    pairs: list[Measured] = []
    runs: list[dict[str, Any]] = []
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
                if args.method == "blocks" and load == "iperf3":
                    port += 1
                    blocks, run = blocks_run(tracer, a, b, args.duration, args.pairs, port, work, notes)
                    pairs += blocks
                    runs.append(run)
                    time.sleep(PAUSE_S)
                else:
                    pairs += pairs_run(tracer, load, a, b, args, port, work)
                    port += args.pairs
    return summarize(pairs), pairs, notes, runs


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        load0 = os.getloadavg()
        summary, measured, notes, runs = benchmark(args)
        load1 = os.getloadavg()
        if args.method == "blocks":
            how = (f"iperf3 by blocks: {args.pairs} traced block{'s' if args.pairs != 1 else ''} x {args.duration:g} s "
                   f"between untraced ones in one "
                   f"connection per tracer ({INTERVAL_S:g} s intervals)" +
                   (f", rr by {args.pairs} pairs x {args.duration:g} s" if "rr" in args.loads else ""))
        else:
            how = f"{args.pairs} pairs x {args.duration:g} s per tracer and load"
        header = (f"cniprof overhead beside perf and bpftrace: flannel/vxlan cross-node, {how}, {os.cpu_count()} "
                  f"CPUs, kernel {os.uname().release}; load average before {load0[0]:.2f}, after {load1[0]:.2f}")
        header = "\n".join([header, *(f"note: {n}" for n in notes)])
        print(report(summary, header))
        if args.json:
            doc = {"header": header, "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                   "summary": summary,
                   "pairs": [{**vars(p), "info": vars(p.info), "ratio": p.ratio} for p in measured
                             if isinstance(p, Pair)],
                   "blocks": [{**vars(p), "info": vars(p.info), "ratio": p.ratio} for p in measured
                              if isinstance(p, Block)],
                   "runs": runs}
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
