# SPDX-License-Identifier: Apache-2.0
"""Duty-cycled tracing under an overhead budget (`trace --overhead-budget PCT`, default 2 %).

Why duty cycling: the hop programs run for every packet that passes their tracepoints, tracked or not, and most of
their price is fixed per event (tracepoint dispatch + program entry). Sampling 1-in-N packets cannot lower that;
fewer invocations can, and a tracepoint with no program attached costs nothing. So the programs are attached for a
fraction of each period and detached in between, the fraction chosen while running so that what the probe costs
stays within the budget's share of the CPU time the traffic takes.

What is measured, per period of PERIOD_S:
- the probe's own cost: each program's run time and run count from the kernel's run-time statistics (held on with
  BPF_ENABLE_STATS for the run: cniprof.bpf.prog_stats), plus run count x the per-event dispatch cost around a
  program body that the statistics do not see (calibrated once at start, `calibrate_dispatch`), plus the CPU time
  of this controller's own thread (attach, detach, reads). The whole cniprof process's CPU time over the same
  periods is reported beside it (`process_cpu_s`: the live view's redraws, the snapshot reads, starting and
  watching the traffic generators) but not budgeted: it is mostly not a cost per packet, and at light traffic
  it alone would exceed the budget and leave nothing traced (measured: an in-process run reading snapshots 4 times
  a second costs ~10 ms/s, the controller ~0.6 ms/s);
- the traffic's CPU time: the node's kernel CPU time (system + irq + softirq over all CPUs, /proc/stat), where the
  datapath runs. It includes the probe's own cost and any other kernel work on the node: such work makes the
  budget laxer by its share.
The fraction for the next period holds own / traffic at AIM x the budget over the last HISTORY periods and the next one,
so a calibration phase at full coverage is paid back, and a change of load is followed within a period or two.
The allowance never falls below FLOOR_NS_PER_S of CPU per second (light traffic on a quiet node: the share would
not pay for a single window).

A window: attach (its start is recorded in the kernel as window_ns), then packets start tracking (not before
every program is attached: attaching patches each tracepoint's call site, which would stall packets already
tracked) for the window's time minus DRAIN_S, then no new packet starts while those in flight finish their path, then detach. A packet still in
flight at the detach (its latency longer than the drain) is ended as `cut` when its slot comes back, never timed
across the gap; the hops it passed before stay in the histograms, its later hops and end-to-end time are missing.
Each window starts at a random offset inside its period, so periodic traffic is not sampled at one phase only.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import random
import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from cniprof.bpf.build import object_path
from cniprof.bpf.libbpf import Object
from cniprof.bpf.prog_stats import RunTimeStats, prog_stats
from cniprof.probes.hops import HopProbe

FULL_BUDGET_PCT = 100.0  # this budget or more: attached the whole run (exact counts), cost still measured
DEFAULT_BUDGET_PCT = 2.0
# the budget is a ceiling: the controller aims this far under it. Aiming at the budget itself, runs came out a
# little over (own cost 2.04-2.07 % at 2 %: a window's cost is known only after it), and a run's one-offs (the
# dispatch calibration, ~40 ms of CPU) are not budgeted; the traffic loses about what the probe costs
# (benchmarks/overhead.py --method blocks, iperf3: budget 0.5 / 2 / 8 % -> own cost 0.48 / 2.04 / 8.11 %,
# throughput 1.002 / 0.977 / 0.922 of untraced)
AIM = 0.9
PERIOD_S = 0.5
DRAIN_S = 0.01  # no new starts for this long before each detach
WARM_S = 0.005  # attached, before packets start tracking
MIN_START_S = 0.002  # a window shorter than drain + this is not worth its attach: the period stays detached
HISTORY = 8  # periods over which the budget is held (plus the next one)
# the budget never allows less than this much CPU per second (0.2 % of one CPU): on a quiet node the kernel's CPU
# time is a few ms per second, of which a percentage pays neither one window's attach and detach (~2-3 ms) nor
# the controller's own reads (~0.6 ms/s), so a pure share would leave light traffic untraced
FLOOR_NS_PER_S = 2_000_000
FIRST_FRACTION = 0.1  # of the first period, attached to measure what the probe costs at this load
PR_SET_NAME = 15
THREAD_NAME = b"cniprof-duty"


def kernel_cpu_ns(path: str = "/proc/stat") -> int:
    """The node's kernel CPU time so far, all CPUs: system + irq + softirq (ns; USER_HZ resolution)."""
    with open(path) as f:
        fields = f.readline().split()
    # cpu user nice system idle iowait irq softirq steal guest guest_nice
    ticks = int(fields[3]) + int(fields[6]) + int(fields[7])
    return ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def _prctl_rename(libc: Any, name: bytes) -> None:
    libc.prctl(PR_SET_NAME, name, 0, 0, 0)


def calibrate_dispatch(rounds: int = 21, renames: int = 400, warm: int = 50) -> dict[str, float]:
    """The per-event price of a tracepoint program outside its body, on this machine, with statistics on.

    Fires task_rename `renames` times from this thread (prctl PR_SET_NAME: it renames only this thread) with
    bpf/dispatch.bpf.c's one-increment program detached and then attached, `rounds` times, on this thread's CPU
    clock (preemption by other work does not count); `warm` untimed renames first each time, so that the first,
    cold runs after an attach are not in the figure. The median difference per rename is the whole price of one
    program run; the program's own run-time statistics give its body's share. Call with statistics enabled.

    Many short rounds, not a few long ones: the same machine gave medians from -37 to 172 ns with 3 rounds of
    10000 (~80 ms of CPU) and from 138 to 185 ns with these defaults (~40 ms)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    name = ctypes.create_string_buffer(THREAD_NAME)
    diffs = []
    with Object(object_path("dispatch")) as obj:
        obj.load()
        for _ in range(rounds):
            for _ in range(warm):
                _prctl_rename(libc, name)
            t0 = time.thread_time_ns()
            for _ in range(renames):
                _prctl_rename(libc, name)
            off = time.thread_time_ns() - t0
            obj.attach("on_task_rename")
            for _ in range(warm):
                _prctl_rename(libc, name)
            t0 = time.thread_time_ns()
            for _ in range(renames):
                _prctl_rename(libc, name)
            on = time.thread_time_ns() - t0
            obj.detach_all()
            diffs.append((on - off) / renames)
        run_time_ns, run_cnt = prog_stats(obj.prog_fd("on_task_rename"))
    per_event = max(0.0, statistics.median(diffs))
    body = run_time_ns / run_cnt if run_cnt else 0.0
    return {"per_event_ns": per_event, "body_ns": body, "dispatch_ns": max(0.0, per_event - body)}


@dataclass
class _Period:
    bpf_ns: float  # program bodies + dispatch
    control_ns: float  # this controller's thread
    traffic_ns: float  # kernel CPU time of the node
    attached_s: float
    wall_s: float


class DutyCycle:
    """Attach and detach a loaded HopProbe's programs under an overhead budget, measuring what it costs.

    The probe must be attached already (so attaching is not delayed by calibration); start() begins measuring and,
    below a full budget, cycling (detached at once, then windows); stop() detaches and returns the final status, which is also kept
    in probe.status (and so in every snapshot) while running."""

    def __init__(self, probe: HopProbe, budget_pct: float = DEFAULT_BUDGET_PCT, period_s: float = PERIOD_S,
                 drain_s: float = DRAIN_S):
        self.probe = probe
        self.budget_pct = float(budget_pct)
        self.full = self.budget_pct >= FULL_BUDGET_PCT
        self.period_s = period_s
        self.drain_s = drain_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stats: RunTimeStats | None = None
        self.error: BaseException | None = None
        self.calibration: dict[str, float] = {}
        self.history: deque[_Period] = deque(maxlen=HISTORY)
        self.timeline: list[dict[str, float]] = []
        self.windows = 0
        self._t0 = 0.0
        self._attached_s = 0.0  # whole run
        self._wall_s = 0.0  # the measured periods' time: coverage's denominator
        self._starting_s = 0.0  # time packets could start tracking
        self._totals = {"bpf_ns": 0.0, "control_ns": 0.0, "traffic_ns": 0.0}
        self._process_ns = 0  # whole process, over the measured periods (reported, not budgeted)
        self._process_at = 0
        self._prog0: dict[str, tuple[int, int]] = {}
        self._prog_last: dict[str, tuple[int, int]] = {}
        self._rate = 0.0

    # --- lifecycle ---
    def start(self) -> None:
        self._stats = RunTimeStats()
        self._t0 = time.monotonic()
        self._prog0 = self._prog_last = self._read_programs()
        self._process_at = time.process_time_ns()
        self._thread = threading.Thread(target=self._main, name="cniprof-duty", daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, Any]:
        """Stop cycling, detach, and return the final status."""
        self._stop.set()
        if self._thread is not None:
            try:
                self._thread.join()
            except RuntimeError:  # an interrupt inside start(): never started, or it starts, sees the stop, returns
                pass
            self._thread = None
        if self.probe.is_attached:
            self.probe.detach()
        if self._stats is not None:
            self._stats.close()
            self._stats = None
        return self.status()

    def close(self) -> None:
        """Like stop(), for an ExitStack: the probe's own close destroys its links anyway."""
        if self._thread is not None or self._stats is not None:
            self.stop()

    # --- measurement ---
    def _read_programs(self) -> dict[str, tuple[int, int]]:
        return {name: prog_stats(self.probe.obj.prog_fd(name)) for name in self.probe.programs}

    def _bpf_ns(self, now: dict[str, tuple[int, int]], before: dict[str, tuple[int, int]]) -> float:
        dispatch = self.calibration.get("dispatch_ns", 0.0)
        total = 0.0
        for name, (run_ns, cnt) in now.items():
            run0, cnt0 = before.get(name, (0, 0))
            total += (run_ns - run0) + (cnt - cnt0) * dispatch
        return total

    def _close_period(self, start: float, cpu0: int, ctl0: int, attached_s: float) -> None:
        """Account one period: the run's totals, the history the next fraction is chosen from, the timeline."""
        progs = self._read_programs()
        p = _Period(bpf_ns=self._bpf_ns(progs, self._prog_last), control_ns=time.thread_time_ns() - ctl0,
                    traffic_ns=kernel_cpu_ns() - cpu0, attached_s=attached_s, wall_s=time.monotonic() - start)
        self._prog_last = progs
        now = time.process_time_ns()
        self._process_ns += now - self._process_at
        self._process_at = now
        if attached_s > 0:
            self._rate = p.bpf_ns / attached_s  # the latest cost per second attached, when nothing newer is known
        self.history.append(p)
        self._totals["bpf_ns"] += p.bpf_ns
        self._totals["control_ns"] += p.control_ns
        self._totals["traffic_ns"] += p.traffic_ns
        self._attached_s += attached_s
        self._wall_s += p.wall_s
        own = p.bpf_ns + p.control_ns
        self.timeline.append({"t_s": round(time.monotonic() - self._t0, 3),
                              "coverage": round(attached_s / p.wall_s, 4) if p.wall_s else 0.0,
                              "own_cost_pct": round(100.0 * own / p.traffic_ns, 3) if p.traffic_ns else 0.0,
                              "own_ms": round(own / 1e6, 3), "traffic_ms": round(p.traffic_ns / 1e6, 3)})
        self.probe.status = self.status(timeline=False)

    def _next_fraction(self) -> float:
        """The attached fraction of the next period that holds own cost / traffic CPU at AIM x the budget over the
        last HISTORY periods and the next one."""
        budget = AIM * self.budget_pct / 100.0
        hist = list(self.history)
        attached = sum(p.attached_s for p in hist)
        # ns of probe cost per second attached, at the current load
        rate = sum(p.bpf_ns for p in hist) / attached if attached > 0 else self._rate
        cycles = [p.control_ns for p in hist if p.attached_s > 0]
        cycle_ns = statistics.median(cycles) if cycles else 0.0
        recent = hist[-2:]
        if not recent or rate <= 0:
            return FIRST_FRACTION  # nothing measured yet: a short window to measure what one costs
        traffic_rate = sum(p.traffic_ns for p in recent) / max(1e-9, sum(p.wall_s for p in recent))
        own_hist = sum(p.bpf_ns + p.control_ns for p in hist)
        traffic_hist = sum(p.traffic_ns for p in hist)
        wall_hist = sum(p.wall_s for p in hist)
        allowed = max(budget * (traffic_hist + traffic_rate * self.period_s),
                      FLOOR_NS_PER_S * (wall_hist + self.period_s)) - own_hist - cycle_ns
        return min(1.0, max(0.0, allowed / (rate * self.period_s)))

    # --- the controller thread ---
    def _main(self) -> None:
        if self._stop.is_set():  # stopped before it ran (an interrupt inside start()): touch nothing
            return
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
            _prctl_rename(libc, ctypes.create_string_buffer(THREAD_NAME))
            if self.full:
                self._calibrate()
                while not self._stop.is_set():
                    start, cpu0, ctl0 = time.monotonic(), kernel_cpu_ns(), time.thread_time_ns()
                    self._stop.wait(self.period_s)
                    self._starting_s += time.monotonic() - start
                    self._close_period(start, cpu0, ctl0, time.monotonic() - start)
                return
            # the caller attached to be ready at once; cycling starts detached, calibrates, then opens a first
            # window of FIRST_FRACTION, whose measured cost sets the next ones
            t_on = time.monotonic()
            self._drain_and_detach()
            self._attached_s += time.monotonic() - t_on
            self._starting_s += time.monotonic() - t_on
            self._calibrate()
            while not self._stop.is_set():
                self._one_period()
        except Exception as e:  # noqa: BLE001 - reported by the caller (trace), never lost in the thread
            self.error = e

    def _calibrate(self) -> None:
        cal0 = time.thread_time_ns()
        self.calibration = calibrate_dispatch()
        # a one-off of start-up, not a cost the traffic pays per packet: reported, not budgeted
        self.calibration["cpu_s"] = (time.thread_time_ns() - cal0) / 1e9

    def _one_period(self) -> None:
        start, cpu0, ctl0 = time.monotonic(), kernel_cpu_ns(), time.thread_time_ns()
        window = self._next_fraction() * self.period_s
        attached_s = 0.0
        if window >= WARM_S + self.drain_s + MIN_START_S:
            if self._stop.wait(random.uniform(0.0, self.period_s - window)):
                self._close_period(start, cpu0, ctl0, 0.0)  # stopped before the window: a detached period
                return
            t_att = time.monotonic()
            # starts only once every program is attached: attaching patches each tracepoint's call site (IPIs to
            # every CPU), which would delay the packets already tracked and put the patching into their hops
            self.probe.attach()
            # and after a few ms of untracked events: the programs and their maps are cold after the time off, and
            # the first packets tracked would carry that into their hop times
            time.sleep(WARM_S)
            self.probe.set_starts(True)
            t_on = time.monotonic()
            self._stop.wait(max(0.0, window - self.drain_s - (t_on - t_att)))
            self._starting_s += time.monotonic() - t_on
            self._drain_and_detach()
            attached_s = time.monotonic() - t_att
            self.windows += 1
        self._stop.wait(max(0.0, self.period_s - (time.monotonic() - start)))
        self._close_period(start, cpu0, ctl0, attached_s)

    def _drain_and_detach(self) -> None:
        """No new starts, DRAIN_S for the packets in flight to finish their path, then detach."""
        self.probe.set_starts(False)
        time.sleep(self.drain_s)
        self.probe.detach()

    # --- reporting ---
    def status(self, timeline: bool = True) -> dict[str, Any]:
        elapsed = max(1e-9, time.monotonic() - self._t0) if self._t0 else 0.0
        t = self._totals
        own = t["bpf_ns"] + t["control_ns"]
        progs = self._prog_last
        programs = {}
        for name, (run_ns, cnt) in progs.items():
            run0, cnt0 = self._prog0.get(name, (0, 0))
            n = cnt - cnt0
            programs[name] = {"run_cnt": n, "run_time_ns": run_ns - run0,
                              "ns_per_event": round((run_ns - run0) / n, 1) if n else None}
        events = sum(p["run_cnt"] for p in programs.values())
        out: dict[str, Any] = {
            "budget_pct": self.budget_pct,
            "floor_ms_per_s": FLOOR_NS_PER_S / 1e6,
            "mode": "full" if self.full else "duty-cycled",
            "coverage": round(min(1.0, self._attached_s / self._wall_s), 4) if self._wall_s else None,
            "tracked_share": round(min(1.0, self._starting_s / self._wall_s), 4) if self._wall_s else None,
            "own_cost_pct": round(100.0 * own / t["traffic_ns"], 3) if t["traffic_ns"] else None,
            "own_cpu_s": round(own / 1e9, 4),
            "bpf_cpu_s": round(t["bpf_ns"] / 1e9, 4),
            "control_cpu_s": round(t["control_ns"] / 1e9, 4),
            "process_cpu_s": round(self._process_ns / 1e9, 4),
            "traffic_cpu_s": round(t["traffic_ns"] / 1e9, 4),
            "events": events,
            "dispatch_ns": round(self.calibration.get("dispatch_ns", 0.0), 1) if self.calibration else None,
            "calibration_cpu_s": round(self.calibration.get("cpu_s", 0.0), 4) if self.calibration else None,
            "programs": programs,
            "period_s": self.period_s,
            "drain_s": self.drain_s,
            "windows": self.windows,
            "elapsed_s": round(elapsed, 3),
        }
        if timeline:
            out["timeline"] = list(self.timeline)
        return out
