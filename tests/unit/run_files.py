# SPDX-License-Identifier: Apache-2.0
"""Real run directories for the bad-input tests, made from recorded kernel data in tests/unit/data: a trace
export with every file (hop, CPU, netfilter snapshots, node state; the CPU snapshot cut to 60 samples so a test
re-renders it quickly), a study directory and a folded profile."""

from __future__ import annotations

import gzip
import json
import platform
import shutil
from pathlib import Path

from cniprof.analysis.record import TraceRecord
from cniprof.report.export import export_trace

DATA = Path(__file__).parent / "data"


def small_cpu_snapshot(samples: int = 60) -> dict:
    with gzip.open(DATA / "recorded_cpu_tcp.json.gz") as f:
        cpu = json.load(f)["cpu"]
    keep = cpu["samples"][:samples]
    used = sorted({s[k] for s in keep for k in ("kstack", "ustack") if s.get(k) is not None})
    renumber = {old: i for i, old in enumerate(used)}
    return {**cpu, "stacks": [cpu["stacks"][i] for i in used],
            "samples": [{**s, **{k: renumber[s[k]] for k in ("kstack", "ustack") if s.get(k) is not None}}
                        for s in keep]}


def trace_export(out: Path) -> Path:
    """A `trace --cpu --nf --export` directory of a recorded 23-datagram flannel run."""
    record = TraceRecord(
        "flannel", "vxlan", "cross-node", json.loads((DATA / "recorded_flannel_udp23.json").read_text()), 5.0,
        traffic={"tool": "udp", "throughput_bps": 1e6, "retransmits": None}, probes=("tp_btf/net_dev_queue",),
        sampling={"mode": "auto", "every": 1}, cpu=small_cpu_snapshot(),
        nf=json.loads((DATA / "recorded_nf_service_udp23.json").read_text()),
        nodestate=json.loads((DATA / "advise" / "flannel_clean" / "nodestate.json").read_text()),
        kernel=platform.release(), arch=platform.machine())
    export_trace(out, record)
    return out


def study_dir(out: Path) -> Path:
    """A recorded study's run directory (metadata.json, results.csv, hops.csv)."""
    shutil.copytree(DATA / "study_run", out)
    return out
