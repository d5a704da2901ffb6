# SPDX-License-Identifier: Apache-2.0
"""Findings of a run directory: rules per run, ranked; for a study, merged over each group's repetitions."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from cniprof.advise.advice import advice_for
from cniprof.advise.finding import FAULT, OBSERVATION, Evidence, Finding
from cniprof.advise.load import RunData, is_study, load_run, load_study
from cniprof.advise.rules import e2e_mean, run_rules

NO_TUNNEL_PREFERENCE = ("flannel:host-gw", "calico:bgp", "cilium:native")


def rank(findings: list[Finding]) -> list[Finding]:
    """Faults before observations, then by share (largest first); ranks from 1."""
    out = sorted(findings, key=lambda f: f.sort_key)
    for i, f in enumerate(out, 1):
        f.rank = i
        if not f.advice:
            f.advice = advice_for(f.kind, f.context)
    return out


def advise_run(run: RunData) -> list[Finding]:
    return rank(run_rules(run))


def _merge(kind: str, found: list[Finding], n_runs: int) -> Finding:
    """One finding for a group's repetitions: the median-share instance; a fault when at least half the runs
    found it as one (one noisy repetition does not make a fault)."""
    found = sorted(found, key=lambda f: f.share)
    rep = found[(len(found) - 1) // 2]
    faults = sum(f.severity == FAULT for f in found)
    rep.severity = FAULT if faults * 2 >= n_runs else OBSERVATION
    rep.share = statistics.median(f.share for f in found)
    rep.group = {**rep.group, "runs": f"{len(found)}/{n_runs}"}
    return rep


def _has_tunnel(runs: list[RunData]) -> bool:
    return any(f.kind == "tunnel_overhead" for r in runs for f in run_rules(r))


def advise_study(root: Path) -> list[Finding]:
    study = load_study(root)
    out: list[Finding] = []
    e2e = {k: statistics.median([e2e_mean(r) for r in runs]) for k, runs in study.groups.items() if runs}
    tunnel = {k: _has_tunnel(runs) for k, runs in study.groups.items()}
    for key, runs in study.groups.items():
        model, path, variant = key
        by_kind: dict[str, list[Finding]] = {}
        for r in runs:
            for f in run_rules(r):
                by_kind.setdefault(f.kind, []).append(f)
        for kind, found in by_kind.items():
            f = _merge(kind, found, len(runs))
            f.group = {"model": model, "path": path, "variant": variant, **f.group}
            if kind == "tunnel_overhead":
                _compare_no_tunnel(f, key, e2e, tunnel)
            out.append(f)
    return rank(out)


def _compare_no_tunnel(f: Finding, key: tuple[str, str, str], e2e: dict, tunnel: dict) -> None:
    """Against the same path and variant without a tunnel (same CNI first): the extra latency the tunnel costs."""
    model, path, variant = key
    others = [k for k in e2e if k[1:] == (path, variant) and not tunnel.get(k) and k[0] != "host:network"]
    if not others:
        return
    family = model.split(":")[0]
    others.sort(key=lambda k: (k[0].split(":")[0] != family,
                               NO_TUNNEL_PREFERENCE.index(k[0]) if k[0] in NO_TUNNEL_PREFERENCE else 99))
    base = others[0]
    mine, theirs = e2e[key], e2e[base]
    if not mine or math.isnan(mine) or math.isnan(theirs):
        return
    extra = (mine - theirs) / mine
    f.evidence.append(Evidence(f"{model} vs {base[0]} ({path}, {variant})", "end-to-end mean_us",
                               f"{mine:.2f} vs {theirs:.2f} ({extra:+.0%})", source="runs/*/summary.json"))
    f.share = max(f.share, extra)
    f.title += f"; {base[0]} is {extra:.0%} faster end to end"


def advise(root: str | Path) -> tuple[str, list[Finding]]:
    """("study" | "trace", ranked findings) of a run directory; UsageError when it is neither."""
    path = Path(root)
    if is_study(path):
        return "study", advise_study(path)
    return "trace", advise_run(load_run(path))
