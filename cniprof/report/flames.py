# SPDX-License-Identifier: Apache-2.0
"""Write the flame-style reports of a run next to its tables: cpu.json (the raw CPU snapshot, so any run can be
re-rendered or diffed without root), cpu.folded, cpu.speedscope.json, cpu.svg and hops-flame.svg."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from cniprof.report.flamegraph import flame_svg
from cniprof.report.folded import fold, folded_text, speedscope
from cniprof.report.hopflame import hop_flame_svg

CPU_JSON = "cpu.json"
CPU_FOLDED = "cpu.folded"
CPU_SPEEDSCOPE = "cpu.speedscope.json"
CPU_SVG = "cpu.svg"
HOPS_FLAME_SVG = "hops-flame.svg"


def _write(path: Path, text: str) -> None:
    """Temp file + rename: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def export_flames(out_dir: str | os.PathLike[str], hops: pd.DataFrame | None,
                  cpu: Mapping[str, Any] | None = None, *, e2e_mean_us: Mapping[str, float] | None = None,
                  title: str = "") -> dict[str, Path]:
    """Write hops-flame.svg (when a hop table is given) and, with a CPU snapshot, the four CPU files."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    if hops is not None:
        paths[HOPS_FLAME_SVG] = out / HOPS_FLAME_SVG
        heading = f"{title} · packet path" if title else "Packet path: share of end-to-end latency per hop"
        _write(paths[HOPS_FLAME_SVG], hop_flame_svg(hops, e2e_mean_us, title=heading))
    if cpu is not None:
        for name in (CPU_JSON, CPU_FOLDED, CPU_SPEEDSCOPE, CPU_SVG):
            paths[name] = out / name
        _write(paths[CPU_JSON], json.dumps(cpu, indent=1, allow_nan=False) + "\n")
        folded = fold(cpu)
        _write(paths[CPU_FOLDED], folded_text(folded))
        _write(paths[CPU_SPEEDSCOPE], json.dumps(speedscope(cpu, name=title or "cniprof cpu"),
                                                 allow_nan=False) + "\n")
        freq = cpu.get("freq_hz")
        sub = (f"{sum(folded.values()):,} busy samples at {freq} Hz on {len(cpu.get('cpus') or ())} CPUs · "
               "width = samples · colors = datapath components · hover for details")
        _write(paths[CPU_SVG], flame_svg(folded, title=f"{title} · CPU" if title else "CPU flame graph",
                                         subtitle=sub))
    return paths
