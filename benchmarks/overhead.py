#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""How much the hop probe costs the traffic it watches: iperf3 TCP throughput traced vs untraced, plus the
kernel's own accounting of the time spent in each BPF program.

Why pairs, alternating order: throughput on a small VM drifts (CPU frequency, noisy neighbours, page cache), so
each traced run is compared with an untraced run right next to it, and which one goes first flips every pair so
a steady drift cancels instead of biasing every ratio the same way. The median of the pair ratios is the headline
number; one disturbed pair cannot move it much.

Why bpf_stats_enabled: throughput alone says *that* there is a cost, not *where*. With the sysctl on, the kernel
adds each program's run time and run count to its bpf_prog_info (read by cniprof.bpf.prog_stats.prog_stats), which
gives ns per event per program. The sysctl stays on for the whole benchmark (if another BPF program sits on the
path it then pays the same accounting on both sides of each pair). The accounting is not free: two sched_clock()
reads around every program run, which on a KVM guest go through kvm-clock. Hence two extra numbers:

- the floor: one more run with only a near-empty tp_btf program attached (cpd_tp_btf of bpf/features.bpf.c, one
  atomic add, on net:netif_rx), whose ns/event is what accounting and the call cost on this machine with no work
  at all; ns/event minus the floor approximates the probe's own work;
- --no-stats: the ratio without the accounting (then there is no ns/event), the number closest to what a user of
  `cniprof trace` pays.

A traced run whose snapshot shows no packets on the expected hops is an error: the probe was idle, and a
benchmark of an idle probe would report a meaningless ratio of about 1.

Usage (root): .venv/bin/python benchmarks/overhead.py [--pairs 5] [--duration 4] [--sample N] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from the work tree, like the tests
    sys.path.insert(0, str(ROOT))

from cniprof.bpf.build import object_path
from cniprof.bpf.libbpf import Object
from cniprof.bpf.prog_stats import STATS_SYSCTL, prog_stats
from cniprof.cni.topology import Pod, Topology
from cniprof.errors import CniprofError, EnvironmentProblem, UsageError
from cniprof.interrupts import sigterm_interrupts
from cniprof.lab import cleanup, realize
from cniprof.probes import plan as planning
from cniprof.probes.cpu import CpuSampler
from cniprof.probes.hops import HopProbe
from cniprof.probes.hops import object_name as hops_object_name
from cniprof.probes.sampling import CALIBRATION_S, choose_sample_every
from cniprof.run import trace
from cniprof.traffic.iperf3 import Iperf3, Iperf3Result

CNI, MODE, PATH = "flannel", "vxlan", "cross-node"
CPU_FREQ_HZ = 0  # --cpu: sampling frequency of the CPU stack sampler in traced runs (0: off)
TARGET_RATIO, TARGET_NS = 0.95, 150.0
GOAL_RATIO, GOAL_NS = 0.98, 80.0
PAUSE_S = 0.5  # between runs: let the previous test's sockets and softirq backlog drain
FLOOR_OBJECT, FLOOR_PROGRAM = "features", "cpd_tp_btf"
UNEXPECTED_WARN = 0.01  # unexpected hops above this share of on-path hop packets: the data are suspect

log = logging.getLogger("cniprof.benchmarks.overhead")


@dataclass
class Run:
    """One iperf3 run; the probe fields stay empty for untraced runs."""

    pair: int
    traced: bool
    position: int  # 0 = first of its pair
    throughput_bps: float
    retransmits: int | None
    transfer_s: float  # iperf3's own measured transfer time: the denominator of rates and CPU share
    cpu_host_pct: float | None  # iperf3's view of its own CPU use (sender, receiver)
    cpu_remote_pct: float | None
    window_s: float = 0.0  # probe attached -> counters read
    programs: dict[str, dict[str, int]] = field(default_factory=dict)  # name -> run_time_ns, run_cnt
    hops_expected: int = 0
    hops_with_packets: int = 0
    hop_packets: int = 0  # sum of counts over the expected on-path hops
    e2e_packets: dict[str, int] = field(default_factory=dict)  # direction -> packets seen end to end
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def events(self) -> int:
        return sum(p["run_cnt"] for p in self.programs.values())

    @property
    def run_time_ns(self) -> int:
        return sum(p["run_time_ns"] for p in self.programs.values())


# ---------------------------------------------------------------------------------------------- environment


def _read_stats_sysctl() -> str:
    try:
        with open(STATS_SYSCTL) as f:
            return f.read().strip()
    except FileNotFoundError:
        raise EnvironmentProblem(f"{STATS_SYSCTL} is missing: BPF run-time statistics need Linux 5.8+") from None
    except OSError as e:
        raise EnvironmentProblem(f"cannot read {STATS_SYSCTL}: {e.strerror}") from None


def _enable_bpf_stats(stack: ExitStack) -> None:
    """Turn kernel.bpf_stats_enabled on; the previous value is written back when the stack unwinds."""
    old = _read_stats_sysctl()
    try:
        with open(STATS_SYSCTL, "w") as f:
            f.write("1")
    except OSError as e:
        raise EnvironmentProblem(f"cannot enable {STATS_SYSCTL}: {e.strerror}") from None

    def restore() -> None:
        with open(STATS_SYSCTL, "w") as f:
            f.write(old)

    stack.callback(restore)


def _lab(stack: ExitStack) -> tuple[Topology, bool]:
    """The flannel lab, reused if already up; removed at the end only if this run built it."""
    topo, created = realize.up(CNI, MODE)
    if created:
        stack.callback(cleanup.teardown)
    return topo, created


# ---------------------------------------------------------------------------------------------- runs


def _iperf(a: Pod, b: Pod, duration_s: float, probe: HopProbe | None = None) -> Iperf3Result:
    """One iperf3 run; with a probe in auto sampling mode (sample_every 0), calibrate N as `cniprof trace` does."""
    gen = Iperf3(a.netns, b.netns, b.ip, duration_s)
    try:
        gen.start()
        if probe is not None:
            t0 = time.monotonic()
            time.sleep(CALIBRATION_S)
            n = choose_sample_every(probe.counter("candidates"), time.monotonic() - t0)
            print(f"      (auto sampling: 1 in {n} from {probe.counter('candidates')} candidates in "
                  f"{time.monotonic() - t0:.2f} s)", flush=True)
            if n > 1:
                probe.set_sample_every(n)
                probe.reset_stats()
        return gen.wait()
    finally:
        gen.stop()


def _cpu(res: Iperf3Result) -> tuple[float | None, float | None]:
    cpu = (res.raw.get("end") or {}).get("cpu_utilization_percent") or {}
    host, remote = cpu.get("host_total"), cpu.get("remote_total")
    return (float(host) if host is not None else None, float(remote) if remote is not None else None)


def _run(pair: int, position: int, res: Iperf3Result, traced: bool) -> Run:
    host, remote = _cpu(res)
    return Run(pair, traced, position, res.throughput_bps, res.retransmits, res.duration_s, host, remote)


def untraced_run(pair: int, position: int, a: Pod, b: Pod, duration_s: float) -> Run:
    return _run(pair, position, _iperf(a, b, duration_s), traced=False)


def _check_tracked(run: Run, snapshot: dict[str, Any], plan: planning.Plan) -> None:
    """Fill the run's hop fields and fail loudly if any expected on-path hop saw no packet."""
    path_hops = [h for h in snapshot["hops"] if h["expected"] and h["in_e2e"]]
    run.hops_expected = len(path_hops)
    run.hops_with_packets = sum(1 for h in path_hops if h["count"] > 0)
    run.hop_packets = sum(h["count"] for h in path_hops)
    names = {d.dir: f"{d.src_pod}->{d.dst_pod}" for d in plan.directions}
    run.e2e_packets = {names[e["dir"]]: e["count"] for e in snapshot["e2e"]}
    run.counters = dict(snapshot["counters"])
    idle = [f"{names[h['dir']]} #{h['seq']} {h['role']}" for h in path_hops if h["count"] == 0]
    if not path_hops or idle:
        shown = ", ".join(idle[:4]) + (" ..." if len(idle) > 4 else "")
        raise CniprofError(f"pair {run.pair + 1}: the traced run saw no packets on {len(idle)} of "
                           f"{len(path_hops)} expected hops ({shown}); the probe did not track the iperf3 traffic, "
                           "so its overhead would be measured idle")


def traced_run(pair: int, position: int, a: Pod, b: Pod, duration_s: float, plan: planning.Plan,
               sample_every: int, obj: Path, stats: bool) -> Run:
    """One iperf3 run with the hop probe attached exactly as `cniprof trace` attaches it."""
    with ExitStack() as stack:
        probe = HopProbe(obj, plan.points, plan.expected, plan.directions, sample_every=sample_every or 1)
        stack.callback(probe.close)
        probe.start()
        if CPU_FREQ_HZ:  # --cpu: the stack sampler rides along, as with `cniprof trace --cpu`
            sampler = CpuSampler(object_path("cpu"), CPU_FREQ_HZ)
            stack.callback(sampler.close)
            sampler.start()
        t0 = time.monotonic()
        res = _iperf(a, b, duration_s, probe if sample_every == 0 else None)
        # counters first: nothing after the transfer should count towards it
        programs = {}
        if stats:
            for name in probe.attached:
                run_time_ns, run_cnt = prog_stats(probe.obj.prog_fd(name))
                programs[name] = {"run_time_ns": run_time_ns, "run_cnt": run_cnt}
        window = time.monotonic() - t0
        snapshot = probe.snapshot()
    run = _run(pair, position, res, traced=True)
    run.window_s = window
    run.programs = programs
    _check_tracked(run, snapshot, plan)
    if stats and run.events == 0:
        raise CniprofError(f"pair {pair + 1}: the kernel counted no BPF program runs although the probe tracked "
                           f"packets; is {STATS_SYSCTL} being reset by something else?")
    return run


def floor_run(a: Pod, b: Pod, duration_s: float) -> dict[str, float]:
    """ns/event of a near-empty tp_btf program under the same load: the accounting + call cost, no work."""
    with Object(object_path(FLOOR_OBJECT)) as obj:
        for name in obj.program_names():
            obj.set_autoload(name, name == FLOOR_PROGRAM)
        obj.load()
        obj.attach(FLOOR_PROGRAM)
        res = _iperf(a, b, duration_s)
        run_time_ns, run_cnt = prog_stats(obj.prog_fd(FLOOR_PROGRAM))
    if run_cnt == 0:
        raise CniprofError(f"the floor program {FLOOR_PROGRAM} never ran during iperf3 (net:netif_rx idle?)")
    return {"program": FLOOR_PROGRAM, "run_time_ns": run_time_ns, "run_cnt": run_cnt,
            "ns_per_event": run_time_ns / run_cnt, "throughput_bps": res.throughput_bps}


# ---------------------------------------------------------------------------------------------- summary


def _ns_per_event(run_time_ns: int, run_cnt: int) -> float:
    return run_time_ns / run_cnt if run_cnt else 0.0


def _pair(runs: list[Run], p: int) -> tuple[Run, Run]:
    return (next(r for r in runs if r.pair == p and not r.traced), next(r for r in runs if r.pair == p and r.traced))


def summarize(runs: list[Run], ncpu: int, stats: bool, floor: dict[str, float] | None) -> dict[str, Any]:
    """Pair ratios, their median, and the event-weighted cost of each program over all traced runs."""
    ratios = []
    for p in sorted({r.pair for r in runs}):
        u, t = _pair(runs, p)
        ratios.append(t.throughput_bps / u.throughput_bps if u.throughput_bps else 0.0)
    traced = [r for r in runs if r.traced]
    per_prog: dict[str, dict[str, float]] = {}
    for r in traced:
        for name, s in r.programs.items():
            acc = per_prog.setdefault(name, {"run_time_ns": 0, "run_cnt": 0})
            acc["run_time_ns"] += s["run_time_ns"]
            acc["run_cnt"] += s["run_cnt"]
    total_ns = sum(r.run_time_ns for r in traced)
    total_events = sum(r.events for r in traced)
    transfer = sum(r.transfer_s for r in traced)
    for acc in per_prog.values():
        acc["ns_per_event"] = _ns_per_event(int(acc["run_time_ns"]), int(acc["run_cnt"]))
        acc["events_per_s"] = acc["run_cnt"] / transfer if transfer else 0.0
        acc["share_of_bpf_time"] = acc["run_time_ns"] / total_ns if total_ns else 0.0
    median = statistics.median(ratios)
    ns_event = _ns_per_event(total_ns, total_events) if stats else None
    hop_packets = sum(r.hop_packets for r in traced)
    unexpected = sum(r.counters.get("unexpected", 0) for r in traced)
    return {
        "stats": stats,
        "ratios": ratios,
        "median_ratio": median,
        "min_ratio": min(ratios),
        "max_ratio": max(ratios),
        "untraced_bps_median": statistics.median(r.throughput_bps for r in runs if not r.traced),
        "traced_bps_median": statistics.median(r.throughput_bps for r in traced),
        "programs": per_prog,
        "ns_per_event": ns_event,
        "floor": floor,
        "ns_per_event_above_floor": ns_event - floor["ns_per_event"] if floor and ns_event is not None else None,
        "events": total_events,
        "events_per_s": total_events / transfer if transfer else 0.0,
        "bpf_cpu_share": total_ns / 1e9 / (transfer * ncpu) if transfer else 0.0,
        "ncpu": ncpu,
        "hop_packets": hop_packets,
        "unexpected_hops": unexpected,
        "ratio_target_met": median >= TARGET_RATIO,
        "ns_target_met": ns_event is not None and ns_event <= TARGET_NS,
        "ratio_goal_met": median >= GOAL_RATIO,
        "ns_goal_met": ns_event is not None and ns_event <= GOAL_NS,
    }


def _gbit(bps: float) -> str:
    return f"{bps / 1e9:.3f}"


def _verdict(ok: bool, measured: bool = True) -> str:
    return "n/a" if not measured else ("met" if ok else "MISSED")


def report(runs: list[Run], s: dict[str, Any], header: str) -> str:
    """The printed table: pairs, median ratio, per-program cost, and the proof the probe was busy."""
    lines = [header, ""]
    lines.append(f"{'pair':>4}  {'first':<8} {'untraced Gb/s':>13} {'traced Gb/s':>11} {'ratio':>6}"
                 f"  {'events/s':>10} {'ns/event':>8} {'BPF CPU':>7}  {'hops w/ pkts':>12} {'hop pkts':>10}")
    for i, p in enumerate(sorted({r.pair for r in runs})):
        u, t = _pair(runs, p)
        if s["stats"]:
            ev_s = f"{t.events / t.transfer_s:,.0f}" if t.transfer_s else "-"
            ns = f"{_ns_per_event(t.run_time_ns, t.events):.1f}"
            share = f"{t.run_time_ns / 1e9 / (t.transfer_s * s['ncpu']):.2%}" if t.transfer_s else "-"
        else:
            ev_s = ns = share = "-"
        first = "traced" if t.position == 0 else "untraced"
        lines.append(f"{p + 1:>4}  {first:<8} {_gbit(u.throughput_bps):>13} {_gbit(t.throughput_bps):>11} "
                     f"{s['ratios'][i]:>6.3f}  {ev_s:>10} {ns:>8} {share:>7}  "
                     f"{t.hops_with_packets:>5}/{t.hops_expected:<6} {t.hop_packets:>10,}")
    lines.append("")
    lines.append(f"median ratio traced/untraced: {s['median_ratio']:.3f}  (min {s['min_ratio']:.3f}, "
                 f"max {s['max_ratio']:.3f}; median Gb/s untraced {_gbit(s['untraced_bps_median'])}, "
                 f"traced {_gbit(s['traced_bps_median'])})")
    lines.append("")
    if s["stats"]:
        lines.append(f"{'program (all traced runs)':<26} {'events':>12} {'events/s':>10} {'ns/event':>8} "
                     f"{'share of BPF time':>17}")
        progs = s["programs"]
        for name in sorted(progs, key=lambda n: -progs[n]["run_time_ns"]):
            p = progs[name]
            lines.append(f"{name:<26} {int(p['run_cnt']):>12,} {p['events_per_s']:>10,.0f} "
                         f"{p['ns_per_event']:>8.1f} {p['share_of_bpf_time']:>17.1%}")
        lines.append(f"{'overall (event-weighted)':<26} {s['events']:>12,} {s['events_per_s']:>10,.0f} "
                     f"{s['ns_per_event']:>8.1f} {'100.0%':>17}")
        lines.append(f"BPF CPU share: {s['bpf_cpu_share']:.2%} of {s['ncpu']} CPUs "
                     "(program bodies only; tracepoint dispatch is not in run_time_ns)")
        if s["floor"]:
            f = s["floor"]
            lines.append(f"floor: near-empty {f['program']} (one atomic add, net:netif_rx) measures "
                         f"{f['ns_per_event']:.1f} ns/event under the same load (stats accounting + call); "
                         f"probe work above it ~{s['ns_per_event_above_floor']:.1f} ns/event")
    else:
        lines.append("kernel.bpf_stats_enabled was left off (--no-stats): ratio without accounting overhead, "
                     "no ns/event")
    last = next(r for r in reversed(runs) if r.traced)
    e2e = ", ".join(f"{k} {v:,}" for k, v in last.e2e_packets.items())
    c = last.counters
    lines.append(f"probe tracked the traffic: every traced run had packets on all {last.hops_expected} expected "
                 f"on-path hops ({s['hop_packets']:,} hop packets in all; last run: {e2e} packets end to end, "
                 f"started {c.get('started', 0):,}, unexpected {c.get('unexpected', 0):,}, "
                 f"stale {c.get('stale', 0):,}, dropped {c.get('ended_drop', 0):,})")
    if s["hop_packets"] and s["unexpected_hops"] > UNEXPECTED_WARN * s["hop_packets"]:
        lines.append(f"WARNING: {s['unexpected_hops']:,} unexpected hops against {s['hop_packets']:,} on-path hop "
                     "packets: the probe's data are suspect (stale tracking entries?), and its cost includes the "
                     "unexpected-pair path")
    ns_measured = s["ns_per_event"] is not None
    lines.append(f"target (ratio >= {TARGET_RATIO}: {_verdict(s['ratio_target_met'])}, <= {TARGET_NS:.0f} "
                 f"ns/event: {_verdict(s['ns_target_met'], ns_measured)}); goal (ratio >= {GOAL_RATIO}: "
                 f"{_verdict(s['ratio_goal_met'])}, <= {GOAL_NS:.0f} ns/event: "
                 f"{_verdict(s['ns_goal_met'], ns_measured)})")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Throughput and CPU overhead of the cniprof hop probe on the flannel "
                                "lab (iperf3 TCP, cross-node), traced vs untraced in alternating pairs.")
    p.add_argument("--pairs", type=int, default=5, help="untraced/traced pairs (default 5)")
    p.add_argument("--duration", type=float, default=4.0, help="seconds per iperf3 run (default 4)")
    p.add_argument("--sample", default="auto", metavar="N|auto",
                   help="track 1 in N packets when traced; auto (default, as `cniprof trace`) picks N from the "
                        "offered load in the first 0.5 s")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of untraced, uncounted iperf3 first; 0: none")
    p.add_argument("--cpu", type=int, nargs="?", const=999, default=0, metavar="HZ",
                   help="also run the CPU stack sampler (default 999 Hz) in traced runs, as `trace --cpu` does")
    p.add_argument("--no-stats", action="store_true",
                   help="leave kernel.bpf_stats_enabled alone: a ratio without the accounting's own cost, "
                   "no ns/event")
    p.add_argument("--json", type=Path, metavar="OUT", help="write every measured number to OUT")
    p.add_argument("--object", type=Path, metavar="PATH",
                   help="benchmark this build of hops.bpf.o instead of the installed one (e.g. a candidate "
                   "optimisation; it must keep cniprof's map ABI)")
    p.add_argument("-v", "--verbose", action="store_true", help="log what is done (to stderr)")
    args = p.parse_args(argv)
    if args.pairs < 1:
        raise UsageError(f"--pairs must be at least 1, not {args.pairs}")
    if args.duration < 1:
        raise UsageError(f"--duration must be at least 1 s (iperf3 runs whole seconds), not {args.duration}")
    if args.sample == "auto":
        args.sample = 0
    elif not str(args.sample).isdigit() or int(args.sample) < 1:
        raise UsageError(f"--sample takes a positive integer or auto, not {args.sample!r}")
    else:
        args.sample = int(args.sample)
    if args.warmup < 0:
        raise UsageError(f"--warmup cannot be negative, not {args.warmup}")
    return args


def benchmark(args: argparse.Namespace) -> tuple[dict[str, Any], list[Run]]:
    """Lab up, warm-up, the pairs, the floor run; everything acquired is released on the way out."""
    opts = trace.TraceOptions(cni=CNI, path=PATH, traffic="iperf3", duration_s=args.duration,
                              sample_every=args.sample)
    model = trace.preflight(opts)
    obj = args.object or object_path(hops_object_name())
    if not obj.is_file():
        raise UsageError(f"--object {obj} does not exist")
    stats = not args.no_stats
    notes = []
    if not stats and _read_stats_sysctl() != "0":
        notes.append(f"{STATS_SYSCTL} is already on (set by someone else): the ratio includes accounting anyway")
    ncpu = os.cpu_count() or 1
    runs: list[Run] = []
    floor = None
    # a timeout's SIGTERM unwinds like Ctrl-C, so the sysctl, probe and lab are restored
    with sigterm_interrupts(), ExitStack() as stack:
        if stats:
            _enable_bpf_stats(stack)
        topo, created = _lab(stack)
        a, b = trace.pick_pods(topo, PATH, None, None)
        plan = planning.build_plan(topo, model.chain(PATH), a.name, b.name)
        if args.warmup > 0:
            _iperf(a, b, args.warmup)
            time.sleep(PAUSE_S)
        for pair in range(args.pairs):
            order = (False, True) if pair % 2 == 0 else (True, False)
            for position, traced in enumerate(order):
                if traced:
                    run = traced_run(pair, position, a, b, args.duration, plan, args.sample, obj, stats)
                else:
                    run = untraced_run(pair, position, a, b, args.duration)
                runs.append(run)
                log.info("pair %d %s: %.3f Gb/s", pair + 1, "traced" if traced else "untraced",
                         run.throughput_bps / 1e9)
                time.sleep(PAUSE_S)
        if stats:
            floor = floor_run(a, b, args.duration)
    summary = summarize(runs, ncpu, stats, floor)
    header = (f"cniprof hop-probe overhead: {CNI}/{MODE} {PATH}, iperf3 TCP {a.name} ({a.node}) -> {b.name} "
              f"({b.node}), {args.pairs} pairs x {args.duration:g} s, sampling {'auto' if not args.sample else f'1/{args.sample}'}, "
              f"{f'cpu sampler {args.cpu} Hz, ' if args.cpu else ''}"
              f"bpf stats {'on' if stats else 'off'}, {ncpu} CPUs, kernel {os.uname().release}, "
              f"lab {'built' if created else 'reused'}" + (f", object {obj}" if args.object else ""))
    header = "\n".join([header, *(f"note: {n}" for n in notes)])
    result = {
        "header": header,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "object": str(obj),
        "src": {"pod": a.name, "node": a.node, "ip": a.ip},
        "dst": {"pod": b.name, "node": b.node, "ip": b.ip},
        "lab_created": created,
        "runs": [{**asdict(r), "events": r.events, "run_time_ns": r.run_time_ns} for r in runs],
        "summary": summary,
    }
    return result, runs


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        global CPU_FREQ_HZ
        CPU_FREQ_HZ = args.cpu
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                            format="%(levelname)s %(message)s")
        result, runs = benchmark(args)
        print(report(runs, result["summary"], result["header"]))
        if args.json:
            try:
                args.json.write_text(json.dumps(result, indent=2) + "\n")
            except OSError as e:
                raise CniprofError(f"cannot write {args.json}: {e.strerror}") from None
            print(f"wrote {args.json}")
    except CniprofError as e:
        print(f"overhead: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("overhead: interrupted; the probe, bpf_stats_enabled and any lab this run built were restored",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
