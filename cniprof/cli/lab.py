# SPDX-License-Identifier: Apache-2.0
"""`cniprof lab up|down|status`: the embedded lab (namespaces emulating a CNI on two nodes).

Thin layer: parsing, printing and exit codes only; building is cniprof.lab.realize, removing
cniprof.lab.cleanup.
"""

from __future__ import annotations

import argparse

from rich import box
from rich.console import Console
from rich.table import Table

from cniprof.cli import commands
from cniprof.cni import registry
from cniprof.cni.topology import Device, Topology, netns_inode
from cniprof.errors import EnvironmentProblem
from cniprof.lab import cleanup, realize, saved
from cniprof.run import inject, trace
from cniprof.run.explore import explore, format_steps

ACTIONS = ("up", "inject", "down", "status", "explore")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = commands.add(subparsers, "lab", __doc__)
    parser.set_defaults(func=run, lab_parser=parser)
    sub = parser.add_subparsers(dest="lab_command", metavar="ACTION")

    up = sub.add_parser("up", help="build the lab (root)")
    up.add_argument(
        "--cni",
        default="flannel",
        help=f"CNI[:MODE] to emulate (default flannel; supported: {', '.join(realize.supported())})",
    )
    up.add_argument("--mode", default=None, help="datapath mode, if not given as CNI:MODE (flannel: vxlan)")
    up.add_argument("--inject", action="append", default=[], metavar="NAME",
                    help="apply a known problem and leave it until `lab down` (repeatable): "
                         f"{', '.join(inject.INJECTIONS)}, services=N")
    up.set_defaults(func=run)

    inj = sub.add_parser("inject", help="apply known problems to the lab that is up, until `lab down` (root)")
    inj.add_argument("names", nargs="+", metavar="NAME", help=", ".join((*inject.INJECTIONS, "services=N")))
    inj.set_defaults(func=run)

    down = sub.add_parser(
        "down", help="remove every cniprof lab namespace, even without the state file (root)"
    )
    down.set_defaults(func=run)

    status = sub.add_parser("status", help="show the lab that is up")
    status.add_argument("--json", action="store_true", help="print the topology as JSON")
    status.set_defaults(func=run)

    explore = sub.add_parser(
        "explore",
        help="send packets through the lab with every point and no expected hop; print the chain they took (root)",
    )
    explore.add_argument("--path", default=None, choices=("cross-node", "same-node", "pod-to-host"),
                         help="which pair (default cross-node, or the lab model's only path)")
    explore.add_argument("--src", help="source pod (default: the first pod)")
    explore.add_argument("--dst", help="destination pod (default: the first pod matching --path)")
    explore.add_argument("--traffic", choices=("udp", "ping"), default="ping",
                         help="udp: one direction; ping (default): both directions")
    explore.add_argument("--count", type=commands.bounded(int, 1, 10_000), default=10, help="packets (default 10)")
    explore.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    command = getattr(args, "lab_command", None)
    if command == "up":
        return _up(args)
    if command == "down":
        return _down()
    if command == "status":
        return _status(args)
    if command == "inject":
        return _inject(args)
    if command == "explore":
        return _explore(args)
    commands.need_choice(args.lab_parser, "an action", ACTIONS)


def _up(args: argparse.Namespace) -> int:
    console = Console()
    for name in args.inject:
        inject.check_name(name)  # a typo fails before anything is built
    topology, created = realize.up(args.cni, args.mode)
    if not created and not args.inject:
        console.print(f"a {topology.cni}/{topology.mode} lab is already up; nothing to do")
        return 0
    try:
        if args.inject:
            topology, done = inject.apply(topology, args.inject)
            _print_injected(console, done)
        if not created:
            return 0
        console.print(
            f"lab {topology.cni}/{topology.mode} is up: "
            f"{len(topology.nodes)} nodes, {len(topology.pods)} pods "
            f"(state in {saved.STATE_FILE}); injected: {inject.describe(topology)}"
        )
        console.print(_table(topology))
    except BaseException:
        # an injection refused, or Ctrl-C while `lab up` is still running: a lab built here is undone
        if created:
            cleanup.teardown()
        raise
    return 0


def _inject(args: argparse.Namespace) -> int:
    realize.require_root("injecting problems into the lab")
    for name in args.names:
        inject.check_name(name)
    topology = saved.load()
    if topology is None:
        raise EnvironmentProblem("no lab is up; start one with `cniprof lab up --cni flannel --inject NAME`")
    topology, done = inject.apply(topology, args.names)
    _print_injected(Console(), done)
    return 0


def _print_injected(console: Console, done: list[str]) -> None:
    for line in done:
        console.print(f"injected {line}", markup=False, highlight=False)


def _down() -> int:
    realize.require_root("removing the lab")
    console = Console()
    removed, had_state, lingering = cleanup.teardown()
    for name in removed:
        console.print(f"removed netns {name}")
    if had_state:
        console.print(f"removed {saved.STATE_FILE}")
    for name, pids in lingering.items():
        console.print(
            f"[yellow]note:[/] processes {', '.join(map(str, pids))} were still in {name}; "
            "the namespace is freed when they exit"
        )
    if not removed and not had_state:
        console.print("no lab was up; nothing to remove")
    return 0


def _status(args: argparse.Namespace) -> int:
    topology = saved.load()
    if topology is None:
        leftovers = cleanup.list_lab_namespaces()
        if leftovers:
            raise EnvironmentProblem(
                f"no lab is recorded, but lab namespaces exist ({', '.join(leftovers)}); "
                "run `cniprof lab down`"
            )
        raise EnvironmentProblem("no lab is up; start one with `cniprof lab up --cni flannel`")
    existing = set(cleanup.list_lab_namespaces())
    missing = [n for n in topology.namespaces() if n not in existing]
    if missing:
        raise EnvironmentProblem(
            f"the recorded lab is incomplete (missing {', '.join(missing)}); run `cniprof lab down`"
        )
    if args.json:
        print(topology.to_json())
    else:
        console = Console()
        console.print(_table(topology))
        console.print(f"injected: {inject.describe(topology)}")
    return 0


def _explore(args: argparse.Namespace) -> int:
    realize.require_root("exploring the lab")
    topology = saved.load()
    if topology is None:
        raise EnvironmentProblem("no lab is up; start one with `cniprof lab up --cni ...`")
    model = registry.parse(f"{topology.cni}:{topology.mode}")
    path = args.path or model.default_path
    model.chain(path)  # UsageError naming the paths the model has (macvlan: no pod-to-host)
    a, b = trace.pick_pods(topology, path, args.src, args.dst)
    console = Console()
    for seen in explore(topology, a, b, traffic=args.traffic, count=args.count):
        table = Table(title=f"{topology.cni}/{topology.mode} · {path} · {seen.direction}", box=box.SIMPLE_HEAD)
        for column in ("from", "to", "packets", "mean µs"):
            table.add_column(column, justify="right" if column in ("packets", "mean µs") else "left")
        for h in seen.hops:
            table.add_row(h.src, h.dst, str(h.count), f"{h.mean_us:.1f}")
        for h in seen.others:
            table.add_row(f"[dim]{h.src}", f"[dim]{h.dst}", f"[dim]{h.count}", f"[dim]{h.mean_us:.1f}")
        console.print(table)
        console.print(format_steps(seen.chain), markup=False, highlight=False)
    return 0


def _table(topology: Topology) -> Table:
    """One row per device, grouped by namespace; the netns inode is what BPF programs report."""
    table = Table(
        title=f"cniprof lab: {topology.cni}/{topology.mode}",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for column in ("netns", "inode", "device", "role", "ifindex", "address"):
        table.add_column(column, justify="right" if column in ("inode", "ifindex") else "left", no_wrap=True)
    for node in topology.nodes:
        _rows(table, node.netns, node.devices, {"underlay": topology.underlay_ips.get(node.name, "")})
        for pod in (p for p in topology.pods if p.node == node.name):
            _rows(table, pod.netns, pod.devices, {"pod_veth": pod.ip, "macvlan": pod.ip})
        table.add_section()
    return table


def _rows(table: Table, netns: str, devices: tuple[Device, ...], addresses: dict[str, str]) -> None:
    inode = _inode(netns)
    for i, dev in enumerate(devices):
        first = i == 0
        table.add_row(
            netns if first else "",
            inode if first else "",
            dev.name,
            dev.role,
            str(dev.ifindex),
            addresses.get(dev.role, ""),
        )


def _inode(netns: str) -> str:
    try:
        return str(netns_inode(netns))
    except OSError:
        return "?"
