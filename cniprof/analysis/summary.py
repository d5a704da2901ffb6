# SPDX-License-Identifier: Apache-2.0
"""One call from a snapshot to every table (Analysis), and the run summary as plain JSON-ready data.

The UI and the exports both consume an Analysis, so the live view, the final table and the files on disk can never
disagree about a number. summary_dict() only reports what the snapshot, the generator result and the caller
supplied: a missing value stays None instead of being filled in.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import lazy_loader

from cniprof.analysis.accounting import Accounting, accounting
from cniprof.analysis.hops import (
    ChainLike,
    direction_label,
    directions,
    drops_table,
    e2e_table,
    hop_table,
    reconcile,
)

if TYPE_CHECKING:
    import pandas as pd
else:  # imported on first use: a command that does not need it does not wait for it
    pd = lazy_loader.load("pandas")

SUMMARY_VERSION = 1
COUNTER_KEYS = ("started", "hops", "unexpected", "stale", "lost", "ended_copy", "ended_path", "ended_free",
                "ended_drop", "ended_unseen", "in_flight", "stale_in_table")


@dataclass(frozen=True)
class Analysis:
    """Everything derived from one snapshot. DataFrame columns are listed in cniprof.analysis.hops."""

    hops: pd.DataFrame
    drops: pd.DataFrame
    e2e: pd.DataFrame
    reconciliation: pd.DataFrame
    counters: Mapping[str, int]
    directions: tuple[str, ...]  # labels, snapshot order; the first one is the forward direction
    elapsed_s: float | None
    programs: tuple[str, ...] = ()  # BPF programs the probe attached, when the snapshot says
    accounting: Accounting | None = None  # where every started packet went (cniprof.analysis.accounting)

    @property
    def forward(self) -> str | None:
        return self.directions[0] if self.directions else None

    def hops_for(self, direction: str) -> pd.DataFrame:
        return self.hops[self.hops["direction"] == direction]

    def e2e_for(self, direction: str) -> Mapping[str, Any]:
        rows = self.e2e[self.e2e["direction"] == direction]
        return rows.iloc[0].to_dict() if len(rows) else {}

    def reconciliation_for(self, direction: str) -> Mapping[str, Any]:
        rows = self.reconciliation[self.reconciliation["direction"] == direction]
        return rows.iloc[0].to_dict() if len(rows) else {}

    @property
    def lost_events(self) -> int | None:
        """Packets whose tracking the kernel gave up on: lost (map full) + stale (aged out)."""
        present = [int(self.counters[k]) for k in ("lost", "stale") if k in self.counters]
        return sum(present) if present else None


def counters_of(snapshot: Mapping[str, Any]) -> dict[str, int]:
    """The snapshot's counters as ints, known keys first; absent keys stay absent (not invented as 0)."""
    raw = snapshot.get("counters") or {}
    keys = [k for k in COUNTER_KEYS if k in raw] + [k for k in raw if k not in COUNTER_KEYS]
    return {k: int(raw[k]) for k in keys}


def analyze(snapshot: Mapping[str, Any], chain: ChainLike | None = None, topology: Any = None) -> Analysis:
    """Hop table, drops, end-to-end stats and reconciliation of one snapshot.

    The chain (and topology) are only needed when the snapshot's hops are not labelled; see hops.path_hops.
    """
    hops = hop_table(snapshot, chain, topology)
    e2e = e2e_table(snapshot)
    labels = tuple(direction_label(d) for d in directions(snapshot))
    elapsed = snapshot.get("elapsed_s")
    return Analysis(
        hops=hops,
        drops=drops_table(snapshot),
        e2e=e2e,
        reconciliation=reconcile(hops, e2e),
        counters=counters_of(snapshot),
        directions=labels,
        elapsed_s=None if elapsed is None else float(elapsed),
        programs=tuple(str(p) for p in snapshot.get("programs") or ()),
        accounting=accounting(snapshot),
    )


def json_number(x: Any) -> Any:
    """NaN/inf are not JSON: they become None; numpy scalars become Python numbers."""
    if x is None or x is pd.NA:
        return None
    if hasattr(x, "item"):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def traffic_summary(result: Any) -> dict[str, Any]:
    """{tool, throughput_bps, retransmits} from a generator result (mapping or object); all None without one."""
    out: dict[str, Any] = {"tool": None, "throughput_bps": None, "retransmits": None}
    if result is None:
        return out
    for key in out:
        value = result.get(key) if isinstance(result, Mapping) else getattr(result, key, None)
        out[key] = json_number(value)
    return out


def _direction_summary(a: Analysis, label: str) -> dict[str, Any]:
    e = a.e2e_for(label)
    r = a.reconciliation_for(label)
    keys = ("packets", "mean_us", "p50_us", "p90_us", "p99_us")
    out = {k: json_number(e.get(k)) for k in keys}
    out["hop_mean_sum_us"] = json_number(r.get("hop_mean_sum_us"))
    out["unattributed_pct"] = json_number(r.get("unattributed_pct"))
    return out


def summary_dict(
    analysis: Analysis,
    *,
    cni: str | None,
    mode: str | None,
    duration_s: float | None = None,
    traffic: Any = None,
    probes: Iterable[str] | None = None,
    kernel: str | None = None,
    arch: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The content of summary.json (`extra`: further top-level blocks, e.g. sampling, measured elsewhere).

    end_to_end holds the forward direction (the snapshot's first) at the top level and every direction under
    "directions"; hop_mean_sum_us and unattributed_pct at the top level are the forward direction's too.
    duration_s defaults to the snapshot's elapsed_s, probes to the programs the snapshot lists, kernel/arch to this
    machine (call this on the machine that recorded).
    """
    per_dir = {label: _direction_summary(analysis, label) for label in analysis.directions}
    fwd = per_dir.get(analysis.forward or "", {})
    end_to_end: dict[str, Any] = {"direction": analysis.forward}
    end_to_end.update({k: fwd.get(k) for k in ("packets", "mean_us", "p50_us", "p99_us")})
    end_to_end["directions"] = per_dir
    drops_total = int(analysis.drops["count"].sum()) if len(analysis.drops) else 0
    return {
        "version": SUMMARY_VERSION,
        "cni": cni,
        "mode": mode,
        "kernel": kernel if kernel is not None else platform.release(),
        "arch": arch if arch is not None else platform.machine(),
        "duration_s": json_number(duration_s if duration_s is not None else analysis.elapsed_s),
        "traffic": traffic_summary(traffic),
        "end_to_end": end_to_end,
        "hop_mean_sum_us": fwd.get("hop_mean_sum_us"),
        "unattributed_pct": fwd.get("unattributed_pct"),
        "unexpected_hop_pairs": int((~analysis.hops["expected"]).sum()),
        "drops_total": drops_total,
        "drops": [{k: json_number(r.get(k)) for k in ("point", "node", "device", "reason", "reason_code", "count")}
                  for r in analysis.drops.to_dict("records")],
        "accounting": analysis.accounting.to_dict() if analysis.accounting is not None else None,
        "probes": list(analysis.programs if probes is None else probes),
        "lost_events": analysis.lost_events,
        "counters": dict(analysis.counters),
        **dict(extra or {}),
    }


NO_REASON = " (no reason argument)"  # how the hop probe names its kfree_skb program on kernels before 5.17


def probe_types(summary: Mapping[str, Any]) -> dict[str, str | None]:
    """What a trace used per feature, read back from its summary.json, in the vocabulary of `cniprof doctor
    --json`'s "choices" (None: the feature was off in that run), so the two can be compared as they are.

    "probes" names every hop program as `<type>/<category>:<event>`; the drop program is the skb:kfree_skb one
    (with NO_REASON appended where kfree_skb has no reason); "cpu" is present when the CPU sampler (perf_event)
    ran; the "netfilter" block says how its probe attached.
    """
    probes = [str(p) for p in summary.get("probes") or ()]
    hop_types = {p.split("/", 1)[0] for p in probes if "/" in p}
    drop = next((p for p in probes if p.split(" ", 1)[0].endswith("/skb:kfree_skb")), None)
    drops = None if drop is None else drop.split("/", 1)[0] + ("_noreason" if drop.endswith(NO_REASON) else "")
    return {
        "hops": hop_types.pop() if len(hop_types) == 1 else (", ".join(sorted(hop_types)) or None),
        "drops": drops,
        "cpu": "perf_event" if summary.get("cpu") else None,
        "netfilter": (summary.get("netfilter") or {}).get("attach"),
    }
