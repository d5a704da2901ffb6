# SPDX-License-Identifier: Apache-2.0
"""`cniprof doctor`: one calibration pass, reported as what this kernel allows and what each absence costs.

Thin layer: probing is cniprof.bpf.features.calibrate(); this module only renders it (a Rich table and a
one-line verdict, or JSON) and sets the exit status (0 when per-hop tracing can run here, 1 when it cannot),
so scripts and CI can gate on it.
"""

from __future__ import annotations

import argparse
import json
import os

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from cniprof.bpf import build, features
from cniprof.bpf.features import Features
from cniprof.cli import commands
from cniprof.errors import CniprofError, EnvironmentProblem
from cniprof.node import detect
from cniprof.node.detect import Detection


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = commands.add(subparsers, "doctor", "Load and attach one tiny program of each kind cniprof uses, and report what works, why the rest does not, and what that costs in coverage. Exit status 0 when per-hop tracing can run here.")
    parser.add_argument("--json", action="store_true", help="print the calibration as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        raise EnvironmentProblem(
            "cniprof doctor loads BPF programs and creates a network namespace: run it as root (sudo cniprof doctor)"
        )
    result = features.calibrate()
    objects = build.installed_objects()
    node = node_cni()
    if args.json:
        print(json.dumps({**result.to_dict(), "bpf_objects": objects, "cni_detection": node.to_dict()}, indent=2))
    else:
        console = Console()
        render(result, console)
        render_objects(objects, console)
        render_node_cni(node, console)
    return 0 if result.can_trace_hops else 1


def node_cni() -> Detection:
    """What `trace --cni auto` would find on this node (root namespace, files under /); never fails the doctor."""
    try:
        return detect.detect()
    except CniprofError as e:
        return Detection(None, None, [f"detection failed: {e}"])


def render_objects(objects: dict, console: Console) -> None:
    """One line: which machine's BPF objects this cniprof loads, from where, and which machines it carries."""
    carried = ", ".join(machine for machine, names in objects["available"].items() if names)
    console.print(Text(f"BPF objects: {objects['machine']} ({len(objects['objects'])} in {objects['dir']}; "
                       f"carried for {carried or 'no machine'})"))


def render_node_cni(node: Detection, console: Console) -> None:
    """One line (the verdict, what `trace --cni auto` would trace) and the evidence under it."""
    console.print(Text(f"node CNI (trace --cni auto): {node.line()}", style="bold"))
    for line in node.evidence:
        console.print(Text(f"  {line}", style="dim"))


def render(result: Features, console: Console) -> None:
    """Header (kernel, arch, libbpf), the feature table, then the verdict line."""
    console.print(f"kernel {result.kernel} ({result.arch}), libbpf {result.libbpf}")
    console.print(table(result))
    mark, style = ("✓", "green") if result.can_trace_hops else ("✗", "red")
    console.print(Text(f"{mark} {result.verdict()}", style=f"bold {style}"))


def table(result: Features) -> Table:
    """One row per feature: name, ✓/✗, detail, and what cniprof uses it for (plus the coverage lost if missing)."""
    t = Table(box=box.SIMPLE_HEAD, show_lines=False, expand=False)
    t.add_column("feature", no_wrap=True)
    t.add_column("", no_wrap=True)
    t.add_column("detail", ratio=1)
    t.add_column("used for / coverage without it", ratio=1)
    for probe in result.probes():
        status = Text("✓", style="green") if probe.available else Text("✗", style="red")
        use = Text(probe.used_for)
        if not probe.available:
            use.append("\nwithout it: ", style="bold")
            use.append(probe.without)
        t.add_row(features.LABELS[probe.name], status, probe.detail, use)
    return t
