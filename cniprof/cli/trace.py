# SPDX-License-Identifier: Apache-2.0
"""cniprof trace: profile each hop of a CNI datapath while real traffic flows between two pods.

With no cluster at hand the lab is built (and removed afterwards); a lab that is already up is reused and left up.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from cniprof.advise import render
from cniprof.analysis.cpu import analyze_cpu
from cniprof.analysis.record import analyze_record
from cniprof.analysis.summary import analyze
from cniprof.cli import commands, trace_compare, trace_k8s
from cniprof.cli.report import print_written
from cniprof.cni import registry
from cniprof.errors import UsageError
from cniprof.files import writable_dir
from cniprof.probes.plan import DEFAULT_EVENTS, FULL_EVENTS
from cniprof.report import attach, rundir
from cniprof.report.export import export_trace
from cniprof.run import trace
from cniprof.run.rxmeter import RxBytes
from cniprof.ui.console import wide_console
from cniprof.ui.cpu_panel import render_cpu_panel
from cniprof.ui.live import LiveView
from cniprof.ui.run_summary import print_run


def register(sub: argparse._SubParsersAction) -> None:
    p = commands.add(sub, "trace", __doc__)
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


def run(args: argparse.Namespace) -> int:
    if args.k8s or args.dry_run or args.nodes:  # cluster mode
        return trace_k8s.run(args)
    opts = trace.TraceOptions(cni=args.cni, path=args.path, src=args.src, dst=args.dst, duration_s=args.duration,
                              traffic=args.traffic, count=args.count, sample_every=_sample(args.sample),
                              events=FULL_EVENTS if args.points == "full" else DEFAULT_EVENTS,
                              cpu=args.cpu, cpu_freq_hz=args.cpu_freq, nf=args.nf, services=args.services,
                              root=args.root, node_netns=args.node_netns, command=shlex.join(["cniprof", *sys.argv[1:]]))
    if args.export is not None:
        writable_dir(args.export)  # refused now, not after the whole trace ran
    if trace_compare.is_comparison(args.cni):  # the same traffic on each model, one table
        return trace_compare.run(args, opts)
    if args.services is not None and opts.path is None:
        opts.path = "pod-to-service"
    model = trace.preflight(opts)
    chain = trace.chain_for(model, opts.path)
    console = wide_console()
    title = f"cniprof · {model.cni} {model.mode} · {opts.path} · {opts.traffic}"

    if args.no_ui:
        result = trace.run(opts, model=model)
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
                result = trace.run(opts, on_update=on_update, on_cpu=on_cpu, model=model)
        finally:
            if "meter" in rx:
                rx["meter"].close()

    record = result.record
    analysis = analyze_record(record)
    print_run(console, record, analysis)
    more = f"cniprof advise {args.export}" if args.export else "trace with --export DIR, then cniprof advise DIR"
    console.print(render.table(analysis.findings, title=f"findings (top 3; all of them with full advice: {more})",
                               top=3, compact=True))
    if args.export:
        paths = export_trace(args.export, record, analysis)
        console.print(f"exported {', '.join(sorted(paths))} to {args.export}")
        out = args.export / attach.REPORT_DIR
        print_written(console, attach.write(rundir.of_trace(args.export, record, analysis), out), out)
    return 0
