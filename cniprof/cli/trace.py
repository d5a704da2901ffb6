# SPDX-License-Identifier: Apache-2.0
"""cniprof trace: profile each hop of a CNI datapath while real traffic flows between two pods.

With no cluster at hand the lab is built (and removed afterwards); a lab that is already up is reused and left up.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from cniprof import trace
from cniprof.advise import render
from cniprof.advise.engine import advise_run
from cniprof.advise.load import RunData, samples_of
from cniprof.analysis import nf as nf_analysis
from cniprof.analysis import path_check
from cniprof.analysis.cpu import analyze_cpu, traffic_bytes, with_cpu
from cniprof.analysis.summary import analyze, summary_dict
from cniprof.cni import registry
from cniprof.errors import UsageError
from cniprof.lab.counters import RxBytes
from cniprof.probes.hops_abi import ATTACH_POINT
from cniprof.probes.plan import DEFAULT_EVENTS, FULL_EVENTS
from cniprof.report.export import export
from cniprof.report.flames import export_flames
from cniprof.report.nf_export import export_nf
from cniprof.ui.cpu_panel import render_cpu_panel
from cniprof.ui.live import LiveView, render_final_table
from cniprof.ui.nf_table import render_nf_table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("trace", help="per-hop latency of a CNI datapath under real traffic",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cni", default="flannel",
                   help="CNI model, NAME[:MODE] (default flannel = flannel:vxlan); auto: detect the live node's CNI "
                        "and trace its pods (no lab); A,B,...: run the same traffic on each model and print one "
                        "comparison table (with host: each model as %% of host); models: "
                        + ", ".join(registry.supported()))
    p.add_argument("--root", default="/", metavar="DIR",
                   help="--cni auto: the node's root directory holding etc/cni/net.d and run/flannel (default /)")
    p.add_argument("--node-netns", metavar="NAME",
                   help="--cni auto: the node's network namespace (default: the one cniprof runs in)")
    p.add_argument("--path", default=None, choices=trace.PATHS,
                   help="which pair: two pods on different nodes, on one node, or a pod and its own node's stack "
                        "(default cross-node, or the model's only path); pod-to-service: the cross-node pair, "
                        "the source sending to a kube-proxy ClusterIP in front of the destination")
    p.add_argument("--src", help="source pod (default: the first pod)")
    p.add_argument("--dst", help="destination pod (default: the first pod matching --path)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of traffic and tracing (default 10)")
    p.add_argument("--traffic", default="iperf3", choices=trace.TRAFFIC,
                   help="generator: iperf3 TCP stream, udp (exactly --count datagrams), ping (--count echo "
                        "requests), or none (trace whatever flows between the pods)")
    p.add_argument("--count", type=int, default=100, help="packets for --traffic udp/ping (default 100)")
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
    p.add_argument("--services", type=int, default=None, metavar="N",
                   help="with --path pod-to-service (implied): N dummy kube-proxy services besides the real one, to "
                        "scale the iptables rules (default 0). Traffic: iperf3 to ClusterIP:5201 (a long TCP "
                        "stream walks the NAT rules once, on its first packet), or udp to ClusterIP:5300 with "
                        "every datagram from its own socket, a new connection that pays the NAT rule lookup "
                        "(--count at most 4096)")
    p.add_argument("--export", type=Path, metavar="DIR",
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
    p.add_argument("--no-ui", action="store_true", help="no live view; print only the final table")
    p.set_defaults(func=run)


def _where(result: trace.TraceResult, opts: trace.TraceOptions) -> str:
    if opts.topology is not None:
        return f"live node {opts.node_netns or 'root namespace'} (detected {result.model.spec})"
    return f"lab {'built and removed' if result.lab_created else 'reused, left up'}"


def _sample(value: str) -> int:
    if value == "auto":
        return 0
    if not value.isdigit() or int(value) < 1:
        raise UsageError(f"--sample takes a positive integer or auto, not {value!r}")
    return int(value)


def run(args: argparse.Namespace) -> int:
    opts = trace.TraceOptions(cni=args.cni, path=args.path, src=args.src, dst=args.dst, duration_s=args.duration,
                              traffic=args.traffic, count=args.count, sample_every=_sample(args.sample),
                              events=FULL_EVENTS if args.points == "full" else DEFAULT_EVENTS,
                              cpu=args.cpu, cpu_freq_hz=args.cpu_freq, nf=args.nf, services=args.services)
    opts.root, opts.node_netns = args.root, args.node_netns
    opts.agents, opts.test_clock_offset_ns = args.agents, args.test_clock_offset_ns
    if "," in args.cni:  # a comparison: the same traffic on each model, one table (cli/trace_compare.py)
        from cniprof.cli import trace_compare

        return trace_compare.run(args, opts)
    if args.services is not None and opts.path is None:
        opts.path = "pod-to-service"
    model = trace.preflight(opts)
    chain = trace.chain_for(model, opts.path)
    console = Console()
    if not console.is_terminal:  # scripts and CI: keep the table readable instead of 80 columns
        console = Console(width=140)
    title = f"cniprof · {model.cni} {model.mode} · {opts.path} · {opts.traffic}"

    if args.no_ui:
        result = trace.run(opts)
    else:
        # one refresh a second: every redraw re-renders the tables (~20 ms of CPU on the node being measured)
        view = LiveView(title, total_s=opts.duration_s, console=console, refresh_per_second=1.0)
        rx: dict[str, Any] = {}

        def on_update(snapshot: dict, elapsed: float) -> None:
            if "meter" not in rx:
                rx["meter"] = RxBytes.for_snapshot(snapshot)
            view.update(analyze(snapshot, chain), progress=(min(elapsed, opts.duration_s), opts.duration_s),
                        throughput_bps=rx["meter"].bps())

        def on_cpu(cpu_snapshot: dict) -> None:
            view.cpu = render_cpu_panel(analyze_cpu(cpu_snapshot))

        try:
            with view:
                result = trace.run(opts, on_update=on_update, on_cpu=on_cpu)
        finally:
            if "meter" in rx:
                rx["meter"].close()

    analysis = analyze(result.snapshot, chain)
    console.print(render_final_table(analysis, title=title, throughput_bps=result.traffic.get("throughput_bps")))
    check = path_check.check(result.snapshot)
    for i, line in enumerate(check.lines()):
        console.print(line, style=("green" if check.ok else "bold red") if i == 0 else None, markup=False,
                      highlight=False)
    attach_points = [ATTACH_POINT[p] for p in result.probes]
    s = result.extra["sampling"]
    console.print(f"sampling: 1 in {s['every']} packets ({s['mode']}"
                  + (f", chosen from the first {s['calibration_s']} s)" if "calibration_s" in s else ")"))
    console.print(f"probes: {', '.join(attach_points)} · kernel {platform.release()} "
                  f"{platform.machine()} · {_where(result, opts)}")
    cpu = None
    if result.cpu is not None:
        cpu = analyze_cpu(result.cpu, analysis.hops, traffic_bytes(result.traffic), result.extra["sampling"]["every"])
        console.print(render_cpu_panel(cpu))
    nf = nf_analysis.analyze_nf(result.nf) if result.nf is not None else None
    if nf is not None:
        console.print(render_nf_table(nf))
    if "service" in result.extra:
        svc = result.extra["service"]
        console.print(f"service: {svc['cluster_ip']}:{svc['port']}/{svc['protocol']} → {svc['target_pod']} · "
                      f"{svc['dummy_services']} dummy services · {svc['rules_per_node']:,} rules per node "
                      + ("(injected into the lab, left in place)" if svc.get("injected") else
                         f"(applied in {svc['apply_s']:.1f} s, removed after the run)"))
    extra = result.extra
    if nf is not None:
        extra = {**extra, "netfilter": nf_analysis.summary(nf)}
    if cpu is not None:  # hops.csv gains the CPU columns, summary.json the "cpu" block
        analysis, extra = with_cpu(analysis, cpu), {**extra, "cpu": cpu.summary}
    if args.export:
        paths = export(args.export, result.snapshot, analysis=analysis, cni=model.cni, mode=model.mode,
                       duration_s=result.duration_s, traffic=result.traffic,
                       probes=attach_points, extra=extra, nodestate=result.nodestate)
        e2e = dict(zip(analysis.e2e["direction"], analysis.e2e["mean_us"]))
        paths.update(export_flames(args.export, analysis.hops, result.cpu, e2e_mean_us=e2e, title=title))
        if nf is not None:
            paths.update(export_nf(args.export, nf, result.nf))
    summary = summary_dict(analysis, cni=model.cni, mode=model.mode, duration_s=result.duration_s,
                           traffic=result.traffic, extra=extra)
    findings = advise_run(RunData(args.export or Path("."), summary, analysis.hops, analysis.drops,
                                  nf.hooks if nf is not None else None, result.nodestate,
                                  cpu_samples=samples_of(result.cpu)))
    more = f"cniprof advise {args.export}" if args.export else "trace with --export DIR, then cniprof advise DIR"
    console.print(render.table(findings, title=f"findings (top 3; all of them with full advice: {more})", top=3,
                               compact=True))
    if args.export:
        paths.update(render.write(args.export, findings, str(args.export), "trace"))
        console.print(f"exported {', '.join(sorted(p.name for p in paths.values()))} to {args.export}")
    return _agents_outcome(console, result.extra)


def _agents_outcome(console: Console, extra: dict[str, Any]) -> int:
    """--agents per-node: the clock line; a lost agent (exit 3) or an unknowable offset (exit 2) in one line on
    stderr, after everything that was measured has been printed and written."""
    clock, agents = extra.get("clock"), extra.get("agents") or {}
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
