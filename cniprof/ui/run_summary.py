# SPDX-License-Identifier: Apache-2.0
"""The end of a traced run on the console: final hop table, path check, sampling, probes, CPU, netfilter, service.

Printed by `cniprof trace` when the run ends and by `cniprof report DIR` from an export, from the same
TraceAnalysis that the files are written from.
"""

from __future__ import annotations

from rich.console import Console

from cniprof.analysis.record import TraceAnalysis, TraceRecord
from cniprof.ui.cpu_panel import render_cpu_panel
from cniprof.ui.live import render_final_table
from cniprof.ui.nf_table import render_nf_table
from cniprof.ui.tables import overhead_text


def print_run(console: Console, record: TraceRecord, analysis: TraceAnalysis) -> None:
    console.print(render_final_table(analysis.tables, title=record.title,
                                     throughput_bps=record.traffic.get("throughput_bps")))
    if analysis.check is not None:
        for i, line in enumerate(analysis.check.lines()):
            style = ("green" if analysis.check.ok else "bold red") if i == 0 else None
            console.print(line, style=style, markup=False, highlight=False)
    s = record.sampling
    if s:
        console.print(f"sampling: 1 in {s.get('every', 1)} packets ({s.get('mode', 'fixed')}"
                      + (f", chosen from the first {s['calibration_s']} s)" if "calibration_s" in s else
                         ", every packet of the duty-cycled windows)" if s.get("duty_cycled") else ")"))
    where = f" · {record.where}" if record.where else ""
    console.print(f"probes: {', '.join(record.probes)} · kernel {record.kernel} {record.arch}{where}")
    if record.overhead:
        console.print(overhead_text(record.overhead), markup=False, highlight=False)
    if analysis.cpu is not None:
        console.print(render_cpu_panel(analysis.cpu))
    if analysis.nf is not None:
        console.print(render_nf_table(analysis.nf))
    svc = record.service
    if svc:
        console.print(f"service: {svc['cluster_ip']}:{svc['port']}/{svc['protocol']} → {svc['target_pod']} · "
                      f"{svc['dummy_services']} dummy services · {svc['rules_per_node']:,} rules per node "
                      + ("(injected into the lab, left in place)" if svc.get("injected") else
                         f"(applied in {svc['apply_s']:.1f} s, removed after the run)"))
