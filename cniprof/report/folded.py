# SPDX-License-Identifier: Apache-2.0
"""CPU stacks as folded lines (Brendan Gregg's format) and as a speedscope profile.

Folded: one line per distinct stack, `comm;outermost;...;innermost count`, user frames (outermost part) then
kernel frames. Every flame graph tool reads it (flamegraph.pl, inferno, speedscope, our own SVG renderer and
`cniprof diff`). Counts are samples; idle samples are left out so the graphs show where busy CPU time went (the
idle share is in summary.json), otherwise an idle machine's flame graph is one wide `do_idle` tower.

Speedscope: the file-format schema's "sampled" profile, one for all CPUs and one per CPU, weighted in
milliseconds of CPU time (the samples' periods), frames shared between profiles.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from cniprof import __version__
from cniprof.analysis.cpu import sample_component, stack
from cniprof.analysis.cpu_components import IDLE

SPEEDSCOPE_SCHEMA = "https://www.speedscope.app/file-format-schema.json"
_UNSAFE = re.compile(r"[;\s]+")

Folded = Mapping[tuple[str, ...], int]


def _clean(name: str) -> str:
    """Frame and comm names may not contain ';' or whitespace in the folded format."""
    return _UNSAFE.sub("_", name.strip()) or "[empty]"


def sample_frames(snapshot: Mapping[str, Any], s: Mapping[str, Any]) -> tuple[str, ...]:
    """Outermost first: comm, user frames, kernel frames (a lost kernel stack shows as `[stack lost]`)."""
    user = stack(snapshot, s.get("ustack"))[::-1]
    kernel = stack(snapshot, s.get("kstack"))[::-1]
    if s.get("kstack_lost") and not kernel:
        kernel = ["[stack lost]"]
    return tuple(_clean(f) for f in [s.get("comm") or "?", *user, *kernel])


def fold(snapshot: Mapping[str, Any], *, cpu: int | None = None, include_idle: bool = False,
         weight: str = "count") -> Counter[tuple[str, ...]]:
    """Distinct stacks -> samples (weight="count") or CPU nanoseconds (weight="period_ns")."""
    out: Counter[tuple[str, ...]] = Counter()
    for s in snapshot.get("samples") or ():
        if cpu is not None and int(s["cpu"]) != cpu:
            continue
        if not include_idle and sample_component(snapshot, s) == IDLE:
            continue
        out[sample_frames(snapshot, s)] += int(s.get(weight) or 0)
    return out


def folded_text(folded: Folded) -> str:
    """The folded file's content: sorted lines (stable diffs between runs), newline-terminated."""
    lines = [f"{';'.join(frames)} {count}" for frames, count in sorted(folded.items()) if count > 0]
    return "\n".join(lines) + ("\n" if lines else "")


def parse_folded(text: str) -> Counter[tuple[str, ...]]:
    """Read folded lines back (any tool's); malformed lines are skipped, repeated stacks summed."""
    out: Counter[tuple[str, ...]] = Counter()
    for line in text.splitlines():
        head, _, count = line.rstrip().rpartition(" ")
        if not head:
            continue
        try:
            n = int(float(count))
        except ValueError:
            continue
        out[tuple(head.split(";"))] += n
    return out


def speedscope(snapshot: Mapping[str, Any], name: str = "cniprof cpu") -> dict[str, Any]:
    """A speedscope document: shared frames, one "sampled" profile for all CPUs, then one per CPU."""
    frames: list[dict[str, str]] = []
    index: dict[str, int] = {}

    def ids(stack_names: Iterable[str]) -> list[int]:
        out = []
        for f in stack_names:
            if f not in index:
                index[f] = len(frames)
                frames.append({"name": f})
            out.append(index[f])
        return out

    def profile(title: str, folded: Folded) -> dict[str, Any]:
        items = sorted(folded.items())
        weights = [round(ns / 1e6, 6) for _, ns in items]
        return {"type": "sampled", "name": title, "unit": "milliseconds", "startValue": 0,
                "endValue": round(sum(weights), 6), "samples": [ids(st) for st, _ in items], "weights": weights}

    cpus = sorted({int(s["cpu"]) for s in snapshot.get("samples") or ()})
    profiles = [profile(f"{name} · all CPUs", fold(snapshot, weight="period_ns"))]
    profiles += [profile(f"{name} · CPU {c}", fold(snapshot, cpu=c, weight="period_ns")) for c in cpus]
    return {"$schema": SPEEDSCOPE_SCHEMA, "shared": {"frames": frames}, "profiles": profiles, "name": name,
            "activeProfileIndex": 0, "exporter": f"cniprof {__version__}"}
