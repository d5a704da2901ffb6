# SPDX-License-Identifier: Apache-2.0
"""Several models traced with the same traffic -> one comparison table (pure: no root, no kernel).

Why a separate table: the question the project answers is "what does each CNI cost compared with the wire",
which one model's hop table cannot say. Rows are throughput, the end-to-end latency of the forward direction
(the one the generator sends in: iperf3's data, not its ACKs), and every hop role of that direction's path
(mean µs); columns are the models. When `host` (the host-network baseline) is among them, throughput and
end-to-end latency are also given as a percentage of host's.

Hop roles are named by the chains (cniprof/cni), so the same work ("vxlan encap", "bridge input") lines up
across models; a role a model has twice on one path ("ip forward" on both nodes) is split by side, "(src
node)" / "(dst node)". A model without a hop has no value in its row: nothing was paid there.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lazy_loader

from cniprof.analysis.summary import Analysis
from cniprof.files import replacing

if TYPE_CHECKING:
    import pandas as pd
else:  # imported on first use: a command that does not need it does not wait for it
    pd = lazy_loader.load("pandas")

BASELINE = "host:network"
COMPARE_CSV = "compare.csv"  # the long form of a comparison, beside each model's export
CSV_COLUMNS = ["model", "status", "section", "metric", "unit", "value", "pct_of_host", "note"]


@dataclass(frozen=True)
class Entry:
    """One traced model: its spec (`flannel:vxlan`), its analysis, and the generator's throughput if any."""

    spec: str
    analysis: Analysis
    throughput_bps: float | None = None
    sample_every: int | None = None  # the hop probe tracked 1 in N packets (packets and latencies are of those)


@dataclass(frozen=True)
class Skipped:
    """A model that was not traced, and the one-line reason (a kernel option, a path it does not have)."""

    spec: str
    reason: str


@dataclass(frozen=True)
class Row:
    section: str  # throughput | end-to-end | hop
    metric: str
    unit: str
    values: dict[str, float | None] = field(hash=False)  # model -> value (None: not measured / no such hop)
    pct: dict[str, float | None] = field(default_factory=dict, hash=False)  # model -> % of the baseline's value


@dataclass(frozen=True)
class Comparison:
    models: tuple[str, ...]  # traced models, in the order asked
    rows: tuple[Row, ...]
    baseline: str | None  # the model percentages refer to (None: host was not traced)
    skipped: tuple[Skipped, ...] = ()
    directions: dict[str, str] = field(default_factory=dict, hash=False)  # model -> forward direction label

    def row(self, metric: str) -> Row:
        for r in self.rows:
            if r.metric == metric:
                return r
        raise KeyError(metric)

    def frame(self) -> pd.DataFrame:
        """Long form, one line per (model, metric), skipped models as one line each: compare.csv."""
        out: list[dict[str, Any]] = []
        for model in self.models:
            for r in self.rows:
                out.append({"model": model, "status": "traced", "section": r.section, "metric": r.metric,
                            "unit": r.unit, "value": _num(r.values.get(model)), "pct_of_host": _num(r.pct.get(model)),
                            "note": ""})
        for s in self.skipped:
            out.append({"model": s.spec, "status": "skipped", "section": "", "metric": "", "unit": "",
                        "value": None, "pct_of_host": None, "note": s.reason})
        return pd.DataFrame(out, columns=CSV_COLUMNS)

    def to_csv(self, path: str | Path) -> Path:
        with replacing(path) as tmp:
            self.frame().to_csv(tmp, index=False)
        return Path(path)


def _gbit(bps: Any) -> float | None:
    value = _num(bps)
    return value / 1e9 if value is not None else None


def _num(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def pct_of(value: float | None, base: float | None) -> float | None:
    """value as % of the baseline's (None when either is missing, or the baseline is 0); the trace comparison and
    the study report both express models this way."""
    if value is None or base is None or base == 0 or (isinstance(base, float) and math.isnan(base)):
        return None
    return 100.0 * value / base


def hop_means(analysis: Analysis, direction: str | None = None) -> list[tuple[str, float | None]]:
    """(role key, mean µs) of the direction's expected in-path hops, in path order (None: no packet crossed it).

    Roles that occur twice on the path are told apart by the side of the hop's end ("(src node)"/"(dst node)",
    the source node being where the path's first point is), or by position when both are on one node.
    """
    direction = direction or analysis.forward
    df = analysis.hops_for(direction) if direction else analysis.hops.iloc[0:0]
    df = df[df["expected"] & df["in_e2e"]].sort_values("seq")
    if df.empty:
        return []
    src_node = str(df.iloc[0]["from_point"]).split(" ")[0]
    counts = df["role"].value_counts()
    out: list[tuple[str, float | None]] = []
    seen: dict[str, int] = {}
    for _, h in df.iterrows():
        role = str(h["role"])
        key = role
        if counts[role] > 1:
            side = "src node" if str(h["node"]) == src_node else "dst node"
            key = f"{role} ({side})"
            if key in seen:
                key = f"{role} (#{seen[key] + 1})"
            seen[key] = seen.get(key, 0) + 1
        out.append((key, _num(h["mean_us"]) if int(h["packets"]) else None))
    return out


def _merge_order(orders: Iterable[Sequence[str]]) -> list[str]:
    """One row order for every model's hop keys. A new key goes right after its predecessor in its model (after
    the keys other models put there), or, first in its model, right before the first of its model's keys
    already placed: macvlan's "macvlan xmit" lands just above the shared "underlay xmit" row."""
    merged: list[str] = []
    for order in orders:
        order = list(order)
        for i, key in enumerate(order):
            if key in merged:
                continue
            if i:
                pos = merged.index(order[i - 1]) + 1
                while pos < len(merged) and merged[pos] not in order:
                    pos += 1
            else:
                nxt = next((k for k in order[1:] if k in merged), None)
                pos = merged.index(nxt) if nxt is not None else len(merged)
            merged.insert(pos, key)
    return merged


def compare(entries: Sequence[Entry], skipped: Sequence[Skipped] = (), baseline: str = BASELINE) -> Comparison:
    """The comparison table of the entries (models in the order given); percentages of `baseline` if traced."""
    models = tuple(e.spec for e in entries)
    base = baseline if baseline in models else None
    rows: list[Row] = []

    def add(section: str, metric: str, unit: str, values: dict[str, float | None], with_pct: bool) -> None:
        pct = {m: pct_of(values.get(m), values.get(base)) for m in models} if (with_pct and base) else {}
        rows.append(Row(section, metric, unit, values, pct))

    add("throughput", "throughput", "Gbit/s",
        {e.spec: _gbit(e.throughput_bps) for e in entries},
        True)
    e2e = {e.spec: (e.analysis.e2e_for(e.analysis.forward) if e.analysis.forward else {}) for e in entries}
    add("end-to-end", "packets", "", {m: _num(e2e[m].get("packets")) for m in models}, False)
    add("end-to-end", "sampled 1 in", "", {e.spec: _num(e.sample_every) for e in entries}, False)
    for stat in ("mean", "p50", "p99"):
        add("end-to-end", stat, "µs", {m: _num(e2e[m].get(f"{stat}_us")) for m in models}, True)
    per_model = {e.spec: hop_means(e.analysis) for e in entries}
    hops = {m: dict(means) for m, means in per_model.items()}
    order = _merge_order([k for k, _ in means] for means in per_model.values())
    for key in order:
        add("hop", key, "µs", {m: hops[m].get(key) for m in models}, False)
    directions = {e.spec: e.analysis.forward or "" for e in entries}
    return Comparison(models, tuple(rows), base, tuple(skipped), directions)
