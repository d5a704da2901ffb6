# SPDX-License-Identifier: Apache-2.0
"""CPU stacks as folded lines (Brendan Gregg's format) and as a speedscope profile.

Folded: one line per distinct stack, `comm;outermost;...;innermost count`, user frames (outermost part) then
kernel frames. Every flame graph tool reads it (flamegraph.pl, inferno, speedscope, our own SVG renderer and
`cniprof diff`). Counts are samples; idle samples are left out so the graphs show where busy CPU time went (the
idle share is in summary.json), otherwise an idle machine's flame graph is one wide `do_idle` tower.

Speedscope: the file-format schema's "sampled" profile, one for all CPUs and one per CPU, weighted in
milliseconds of CPU time (the samples' periods), frames shared between profiles.

Load a recorded CPU profile from whatever a user points at, and compare two by component.

Accepted: an export directory (its cpu.json, else its cpu.folded), a cpu.json / recorded run JSON file, or any
folded file (from cniprof, perf + stackcollapse, bpftrace...). The CPU snapshot is preferred because it knows
which frames are kernel frames and whether a sample was in a softirq; from folded lines components are charged by
the same rules, with the first frame taken as the process name.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lazy_loader

from cniprof import __version__, runfiles
from cniprof.analysis.cpu import component_table, sample_component, stack
from cniprof.analysis.cpu_components import COMPONENTS, IDLE, classify
from cniprof.errors import UsageError

if TYPE_CHECKING:
    import pandas as pd
else:  # imported on first use: a command that does not need it does not wait for it
    pd = lazy_loader.load("pandas")

CPU_JSON = "cpu.json"  # the CPU sampler's snapshot as recorded (re-render and diff without root)
CPU_FOLDED = "cpu.folded"
CPU_SPEEDSCOPE = "cpu.speedscope.json"
CPU_SVG = "cpu.svg"
SPEEDSCOPE_SCHEMA = "https://www.speedscope.app/file-format-schema.json"
MAX_SAMPLES = 2**53  # samples of one stack: far beyond any recording, small enough to add up exactly
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


def parse_folded(text: str, source: str = "folded") -> Counter[tuple[str, ...]]:
    """Read folded lines back (any tool's); lines without a count are skipped, repeated stacks summed. A count
    that is not a whole number of samples (negative, fractional, nan, huge) is a UsageError naming the line."""
    out: Counter[tuple[str, ...]] = Counter()
    for i, line in enumerate(text.splitlines(), 1):
        head, _, count = line.rstrip().rpartition(" ")
        if not head:
            continue
        try:
            n = float(count)
        except ValueError:
            continue
        if not (math.isfinite(n) and 0 <= n <= MAX_SAMPLES and n == int(n)):
            raise UsageError(f"{source}:{i}: the sample count {count!r} is not a whole number 0..{MAX_SAMPLES}")
        out[tuple(head.split(";"))] += int(n)
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


CHANGE_COLUMNS = ["component", "a_pct", "b_pct", "delta_pp", "a_samples", "b_samples"]


@dataclass(frozen=True)
class Profile:
    name: str
    folded: Counter[tuple[str, ...]]
    components: pd.DataFrame  # component, samples, share_pct (busy samples, idle excluded)


def _keep(comm: str, comms: tuple[str, ...]) -> bool:
    return not comms or comm.startswith(comms)


def _from_snapshot(name: str, cpu: dict[str, Any], comms: tuple[str, ...] = ()) -> Profile:
    if comms:
        cpu = {**cpu, "samples": [s for s in cpu.get("samples") or () if _keep(str(s.get("comm", "")), comms)]}
    comps = component_table(cpu)[["component", "samples", "share_pct"]]
    return Profile(name, fold(cpu), comps.reset_index(drop=True))


def _from_folded(name: str, folded: Counter[tuple[str, ...]], comms: tuple[str, ...] = ()) -> Profile:
    counts: Counter[str] = Counter()
    busy: Counter[tuple[str, ...]] = Counter()
    for frames, n in folded.items():
        comm, rest = (frames[0], frames[1:]) if frames else ("?", ())
        if not _keep(comm, comms):
            continue
        comp = classify(list(reversed(rest)), idle_task=comm.startswith("swapper"), user_mode=not rest)
        if comp != IDLE:  # as cniprof's own folded files: the graphs compare busy CPU
            counts[comp] += n
            busy[frames] += n
    total = sum(counts.values())
    rows = [{"component": c, "samples": n, "share_pct": n / total * 100.0 if total else 0.0}
            for c, n in counts.most_common()]
    return Profile(name, busy, pd.DataFrame(rows, columns=["component", "samples", "share_pct"]))


def load_profile(path: str | Path, comms: tuple[str, ...] = ()) -> Profile:
    """A Profile from an export directory, a CPU snapshot (or recorded run) JSON file, or a folded file.

    comms: keep only samples of processes whose name starts with one of these (e.g. the generator and
    ksoftirqd), to compare like with like on a machine where other work ran too.
    """
    p = Path(path)
    name = p.name if p.is_dir() else p.stem
    if p.is_dir():
        if (p / CPU_JSON).is_file():
            p = p / CPU_JSON
        elif (p / CPU_FOLDED).is_file():
            p = p / CPU_FOLDED
        else:
            raise UsageError(f"{path} has neither {CPU_JSON} nor {CPU_FOLDED}: was it exported with "
                             "`cniprof trace --cpu --export DIR`?")
    if not p.is_file():
        raise UsageError(f"{path}: no such run directory or profile file")
    text = runfiles.read_text(p)
    if p.suffix == ".json":
        try:
            data = runfiles.parse_json(text)
        except ValueError as e:
            raise UsageError(f"{p} is not valid JSON: {str(e).splitlines()[0]}") from None
        except RecursionError:
            raise UsageError(f"{p}: nested too deeply to be a CPU snapshot") from None
        cpu = data.get("cpu", data) if isinstance(data, dict) else None
        if not isinstance(cpu, dict) or "samples" not in cpu or "stacks" not in cpu:
            raise UsageError(f"{p} is not a cniprof CPU snapshot (no samples/stacks)")
        return _from_snapshot(name, runfiles.check(cpu, runfiles.CPU, str(p)), comms)
    folded = parse_folded(text, str(p))
    if not folded:
        raise UsageError(f"{p} has no folded stack lines (`frame;frame;... count`)")
    return _from_folded(name, folded, comms)


def component_changes(a: Profile, b: Profile) -> pd.DataFrame:
    """Per component: share of busy samples in A and B and the change in percentage points, largest change first."""
    sa = a.components.set_index("component")
    sb = b.components.set_index("component")
    names = list(dict.fromkeys([*sb.index, *sa.index]))
    rows = []
    for c in names:
        ap = float(sa["share_pct"].get(c, 0.0))
        bp = float(sb["share_pct"].get(c, 0.0))
        rows.append({"component": c, "a_pct": ap, "b_pct": bp, "delta_pp": bp - ap,
                     "a_samples": int(sa["samples"].get(c, 0)), "b_samples": int(sb["samples"].get(c, 0))})
    df = pd.DataFrame(rows, columns=CHANGE_COLUMNS)
    order = df["delta_pp"].abs().sort_values(ascending=False, kind="stable").index
    return df.loc[order].reset_index(drop=True)


def is_datapath(component: str) -> bool:
    c = COMPONENTS.get(component)
    return bool(c and c.datapath)
