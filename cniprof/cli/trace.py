# SPDX-License-Identifier: Apache-2.0
"""cniprof trace: profile each hop of a CNI datapath while real traffic flows between two pods.

With no cluster at hand the lab is built (and removed afterwards); a lab that is already up is reused and left up.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lazy_loader

from cniprof.cli import commands
from cniprof.cni import registry
from cniprof.errors import UsageError
from cniprof.files import writable_dir
from cniprof.preload import Preload
from cniprof.probes.duty import DEFAULT_BUDGET_PCT
from cniprof.probes.plan import DEFAULT_EVENTS, FULL_EVENTS
from cniprof.run import trace

if TYPE_CHECKING:
    import pandas as pd
    from rich.console import Console

    from cniprof.advise import render
    from cniprof.analysis import cpu as cpu_analysis
    from cniprof.analysis import record as record_mod
    from cniprof.analysis import summary as analysis_summary
    from cniprof.cli import report as report_cli
    from cniprof.cli import trace_compare, trace_k8s
    from cniprof.report import attach, export, rundir
    from cniprof.run import rxmeter
    from cniprof.ui import console as ui_console
    from cniprof.ui import cpu_panel, live, run_summary
else:  # imported on first use: what only the final tables, the files, the live view or the other modes need
    # loads after the probes are attached, not before (issue 15: attached within 0.5 s of the command's start)
    pd = lazy_loader.load("pandas")
    render = lazy_loader.load("cniprof.advise.render", suppress_warning=True)
    cpu_analysis = lazy_loader.load("cniprof.analysis.cpu", suppress_warning=True)
    record_mod = lazy_loader.load("cniprof.analysis.record", suppress_warning=True)
    analysis_summary = lazy_loader.load("cniprof.analysis.summary", suppress_warning=True)
    report_cli = lazy_loader.load("cniprof.cli.report", suppress_warning=True)
    trace_compare = lazy_loader.load("cniprof.cli.trace_compare", suppress_warning=True)
    trace_k8s = lazy_loader.load("cniprof.cli.trace_k8s", suppress_warning=True)
    attach = lazy_loader.load("cniprof.report.attach", suppress_warning=True)
    export = lazy_loader.load("cniprof.report.export", suppress_warning=True)
    rundir = lazy_loader.load("cniprof.report.rundir", suppress_warning=True)
    rxmeter = lazy_loader.load("cniprof.run.rxmeter", suppress_warning=True)
    ui_console = lazy_loader.load("cniprof.ui.console", suppress_warning=True)
    cpu_panel = lazy_loader.load("cniprof.ui.cpu_panel", suppress_warning=True)
    live = lazy_loader.load("cniprof.ui.live", suppress_warning=True)
    run_summary = lazy_loader.load("cniprof.ui.run_summary", suppress_warning=True)

DEFAULT_DURATION_S = 10.0
# the live view's update period: each update reads the probe's maps, analyzes them and draws ~20 rows, ~45 ms of
# CPU on the node being measured while its traffic runs (measured with iperf3 on the flannel lab: 23 ms/s at
# one update every 2 s)
LIVE_INTERVAL_S = 2.0


def register(sub: argparse._SubParsersAction) -> None:
    p = commands.add(sub, "trace", __doc__)
    p.add_argument("--cni", default="flannel",
                   help="CNI model, NAME[:MODE] (default flannel = flannel:vxlan); auto: detect the live node's CNI "
                        "and trace its pods (no lab); A,B,...: run the same traffic on each model and print one "
                        "comparison table (with host: each model as %% of host); models: "
                        + ", ".join(registry.supported()))
    p.add_argument("--root", default="/", metavar="DIR", type=commands.path,
                   help="--cni auto: the node's root directory holding etc/cni/net.d and run/flannel (default /)")
    p.add_argument("--node-netns", metavar="NAME",
                   help="--cni auto: the node's network namespace (default: the one cniprof runs in)")
    p.add_argument("--path", default=None, choices=trace.PATHS,
                   help="which pair: two pods on different nodes, on one node, or a pod and its own node's stack "
                        "(default cross-node, or the model's only path); pod-to-service: the cross-node pair, "
                        "the source sending to a kube-proxy ClusterIP in front of the destination")
    p.add_argument("--src", help="source pod (default: the first pod)")
    p.add_argument("--dst", help="destination pod (default: the first pod matching --path)")
    p.add_argument("--duration", type=commands.finite, default=None, metavar="S",
                   help=f"seconds of traffic and tracing (default {DEFAULT_DURATION_S:g}; with --traffic udp/ping "
                        "at least the time --count takes to send)")
    p.add_argument("--traffic", default="iperf3", choices=trace.TRAFFIC,
                   help="generator: iperf3 TCP stream, udp (exactly --count datagrams), ping (--count echo "
                        "requests), or none (trace whatever flows between the pods)")
    p.add_argument("--count", type=commands.bounded(int, 1, 10**9), default=100, help="packets for --traffic udp/ping (default 100)")
    p.add_argument("--sample", default="auto", metavar="N|auto",
                   help="track 1 in N packets; auto (default) tracks all unless the offered load is high, then "
                        "picks N after 0.5 s so that ~15k packets/s are tracked (the report says which N)")
    p.add_argument("--points", choices=("default", "full"), default="default",
                   help="full adds netif_rx points: veth transfer and CPU backlog wait as separate hops (costs "
                        "one more event per veth crossing)")
    p.add_argument("--cpu", action="store_true",
                   help="also sample kernel/user stacks on every CPU (perf cpu-clock) and softirq time: CPU per "
                        "component and hop, a live CPU panel, flame graphs in --export")
    p.add_argument("--cpu-freq", type=int, default=999, metavar="HZ", help="CPU sampling frequency (default 999)")
    p.add_argument("--nf", action="store_true",
                   help="also time every IPv4 netfilter hook of the lab's nodes (BPF netfilter links at the first "
                        "and last priority) for the traced pods' packets: a netfilter table in the report, nf.csv "
                        "in --export")
    p.add_argument("--services", type=commands.bounded(int, 0, 10**6), default=None, metavar="N",
                   help="with --path pod-to-service (implied): N dummy kube-proxy services besides the real one, to "
                        "scale the iptables rules (default 0). Traffic: iperf3 to ClusterIP:5201 (a long TCP "
                        "stream walks the NAT rules once, on its first packet), or udp to ClusterIP:5300 with "
                        "every datagram from its own socket, a new connection that pays the NAT rule lookup "
                        "(--count at most 4096)")
    p.add_argument("--export", type=commands.path, metavar="DIR",
                   help="write hops.csv/.parquet, drops.csv, summary.json, hops-flame.svg (and with --cpu: "
                        "cpu.json, cpu.folded, cpu.speedscope.json, cpu.svg; with --nf: nf.csv, nf.json)")
    p.add_argument("--agents", choices=trace.AGENTS, default="none",
                   help="per-node: trace through one node agent process per node (`cniprof agent`), each timing its "
                        "own node's hops; the hop between the nodes is timed from packets both agents saw, with the "
                        "clock offset between them estimated from both directions (needs replies: iperf3 or ping). "
                        "Default none: the single tracer, one kernel sees the whole path")
    p.add_argument("--test-clock-offset-ns", type=int, default=0, metavar="NS",
                   help="TEST ONLY, with --agents per-node: added to every time the destination node's agent reports, "
                        "to check that the offset estimate recovers it")
    p.add_argument("--overhead-budget", type=float, default=DEFAULT_BUDGET_PCT, metavar="PCT",
                   help="what the probe may cost, in %% of the node's kernel CPU time (default 2): the hop programs "
                        "are attached for the fraction of each half second that keeps the measured cost there, "
                        "adjusted as the load changes; 100 traces the whole run. --traffic udp/ping (exact counts) "
                        "are always traced whole")
    p.add_argument("--ready-file", metavar="PATH",
                   help="write the attach time (seconds after start) to PATH once the probes are attached")
    p.add_argument("--no-ui", action="store_true", help="no live view; print only the final table")
    k = p.add_argument_group("cluster mode (--k8s; see `cniprof k8s` to deploy the agents)")
    k.add_argument("--k8s", action="store_true",
                   help="trace pods of a Kubernetes cluster: --src/--dst NS/POD, or --nodes A,B")
    k.add_argument("--kubeconfig", help="kubeconfig file (default $KUBECONFIG or ~/.kube/config)")
    k.add_argument("--context", help="kubeconfig context (default: the current one)")
    k.add_argument("--nodes", metavar="A,B", help="schedule a client pod on node A and a server pod on node B "
                                                  "(deleted at the end) and trace between them")
    k.add_argument("--namespace", default=None, help="the agents' namespace (default cniprof)")
    k.add_argument("--image", default=None, help="the cniprof image for generators and --nodes pods "
                                                 "(default: the agents' image tag cniprof:VERSION)")
    k.add_argument("--dry-run", action="store_true", help="print every API call the run would make, in order, "
                                                          "and exit")
    p.set_defaults(func=run)


def _sample(value: str) -> int:
    if value == "auto":
        return 0
    if not value.isdigit() or int(value) < 1:
        raise UsageError(f"--sample takes a positive integer or auto, not {value!r}")
    return int(value)


def _check_count(args: argparse.Namespace) -> None:
    """An explicit --duration is honoured: a --count that cannot be sent within it is refused, not waited for."""
    need = trace.send_time_s(args.traffic, args.count)
    if args.duration is not None and need > args.duration:
        raise UsageError(f"--count {args.count} {args.traffic} packets take {need:.6g} s to send, longer than "
                         f"--duration {args.duration:g}: lower --count, raise --duration or leave it out")


def run(args: argparse.Namespace) -> int:
    _check_count(args)
    if args.duration is None:
        args.duration = DEFAULT_DURATION_S
    if args.k8s or args.dry_run or args.nodes:  # cluster mode: the same tables and files from its record
        if args.export is not None:
            writable_dir(args.export)
        record = trace_k8s.run(args, _sample(args.sample), command=shlex.join(["cniprof", *sys.argv[1:]]))
        return 0 if record is None else finish(args, ui_console.wide_console(), record)
    opts = trace.TraceOptions(cni=args.cni, path=args.path, src=args.src, dst=args.dst, duration_s=args.duration,
                              traffic=args.traffic, count=args.count, sample_every=_sample(args.sample),
                              events=FULL_EVENTS if args.points == "full" else DEFAULT_EVENTS,
                              cpu=args.cpu, cpu_freq_hz=args.cpu_freq, nf=args.nf, services=args.services,
                              root=str(args.root), node_netns=args.node_netns, command=shlex.join(["cniprof", *sys.argv[1:]]),
                              agents=args.agents, test_clock_offset_ns=args.test_clock_offset_ns,
                              overhead_budget_pct=args.overhead_budget, ready_file=args.ready_file,
                              interval_s=LIVE_INTERVAL_S)
    if args.export is not None:
        writable_dir(args.export)  # refused now, not after the whole trace ran
    if args.ready_file is not None:
        if Path(args.ready_file).is_dir():
            raise UsageError(f"--ready-file {args.ready_file} is a directory; name a file")
        writable_dir(Path(args.ready_file).parent)
    if trace_compare.is_comparison(args.cni):  # the same traffic on each model, one table
        return trace_compare.run(args, opts)
    if args.services is not None and opts.path is None:
        opts.path = "pod-to-service"
    model = trace.preflight(opts)
    chain = trace.chain_for(model, opts.path)
    title = f"cniprof · {model.cni} {model.mode} · {opts.path} · {opts.traffic}"

    if args.no_ui:
        result = trace.run(opts, model=model)
        console = ui_console.wide_console()  # after the run: rich loads once the probes are attached
    else:
        console = ui_console.wide_console()
        # drawn once per update, every LIVE_INTERVAL_S
        view = live.LiveView(title, total_s=opts.duration_s, console=console)
        # what the view's updates draw with (pandas: ~0.3 s) loads on its own thread once the probes are attached,
        # and nothing touches it before the first update has waited for it (cniprof.preload)
        drawing = Preload(pd, analysis_summary, rxmeter, *([cpu_analysis, cpu_panel] if opts.cpu else []))
        rx: dict[str, Any] = {}

        def on_update(snapshot: dict, elapsed: float) -> None:
            drawing.wait()
            if "meter" not in rx:
                rx["meter"] = rxmeter.RxBytes.for_snapshot(snapshot)
            view.update(analysis_summary.analyze(snapshot, chain),
                        progress=(min(elapsed, opts.duration_s), opts.duration_s),
                        throughput_bps=rx["meter"].bps(), overhead=snapshot.get("overhead"))

        def on_cpu(cpu_snapshot: dict) -> None:
            drawing.wait()
            view.cpu = cpu_panel.render_cpu_panel(cpu_analysis.analyze_cpu(cpu_snapshot))

        try:
            with view:
                result = trace.run(opts, on_update=on_update, on_cpu=on_cpu, model=model, after_attach=drawing.start)
        finally:
            if "meter" in rx:
                rx["meter"].close()

    return finish(args, console, result.record)


def finish(args: argparse.Namespace, console: Console, record: record_mod.TraceRecord) -> int:
    """Tables, findings and files of a traced record; the exit status (a lost agent, an unknown offset)."""
    analysis = record_mod.analyze_record(record)
    run_summary.print_run(console, record, analysis)
    more = f"cniprof advise {args.export}" if args.export else "trace with --export DIR, then cniprof advise DIR"
    console.print(render.table(analysis.findings, title=f"findings (top 3; all of them with full advice: {more})",
                               top=3, compact=True))
    if args.export:
        paths = export.export_trace(args.export, record, analysis)
        console.print(f"exported {', '.join(sorted(paths))} to {args.export}")
        out = args.export / attach.REPORT_DIR
        report_cli.print_written(console, attach.write(rundir.of_trace(args.export, record, analysis), out), out)
    return _agents_outcome(console, analysis.summary)


def _agents_outcome(console: Console, summary: dict[str, Any]) -> int:
    """--agents per-node: the clock line; a lost agent (exit 3) or an unknowable offset (exit 2) in one line on
    stderr, after everything that was measured has been printed and written."""
    clock, agents = summary.get("clock"), summary.get("agents") or {}
    if clock is None:
        return 0
    if clock.get("status") == "ok":
        matched = ", ".join(f"{d} {n}" for d, n in clock["matched"].items())
        console.print(f"clock: {clock['nodes'][1]} − {clock['nodes'][0]} = {clock['offset_ns'] / 1e3:+.3f} µs "
                      f"± {clock['uncertainty_ns'] / 1e3:.3f} µs ({clock['model']}"
                      + (f", skew {clock['skew_ppm']:+.3f} ppm" if clock["model"] == "linear" else "")
                      + f"); packets matched across the nodes: {matched}")
    lost = {n: a for n, a in agents.items() if a.get("lost")}
    if lost:
        for node, a in lost.items():
            print(f"cniprof: the agent on {node} was lost after {a['lost_at_s']} s ({a['lost']}); its hops end at "
                  f"its last snapshot ({a['last_snapshot_s']} s); everything received was reported", file=sys.stderr)
        return 3
    if clock.get("status") != "ok":
        print(f"cniprof: {clock.get('reason')}", file=sys.stderr)
        return 2
    return 0
