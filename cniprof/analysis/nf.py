# SPDX-License-Identifier: Apache-2.0
"""From a netfilter-cost snapshot (cniprof.probes.nfhooks) to a table per (node, hook) and a summary block.

Pure functions over the JSON snapshot, so a recorded run (nf.json) can be re-analysed without root.

What a row says: `packets` traced packets went through every netfilter hook function registered on that hook of
that node (conntrack lookup, NAT, every iptables/nftables chain) and took `mean_us` between the probe's first and
last priority; `unclosed` entered the hook and never came out of it (dropped or stolen by a rule, or one of the
rare tracking collisions KNOWN_ISSUES.md lists). Hooks no traced packet crossed are kept in the table (a
comparison between runs needs the same rows) and left out of the rendered view.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import lazy_loader

from cniprof.analysis.histogram import Histogram
from cniprof.analysis.summary import json_number

if TYPE_CHECKING:
    import pandas as pd
else:  # imported on first use: a command that does not need it does not wait for it
    pd = lazy_loader.load("pandas")

NF_COLUMNS = ["node", "netns", "hook", "packets", "mean_us", "p50_us", "p90_us", "p99_us", "total_ms", "unclosed"]
HOOK_ORDER = ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")


@dataclass(frozen=True)
class NfAnalysis:
    """The per-hook table plus what the snapshot says about how it was measured."""

    hooks: pd.DataFrame  # NF_COLUMNS, in node order then hook order
    attach: str | None
    addresses: tuple[str, ...]
    elapsed_s: float

    @property
    def active(self) -> pd.DataFrame:
        """Rows some traced packet reached (packets or unclosed > 0): what is worth printing."""
        h = self.hooks
        return h[(h["packets"] > 0) | (h["unclosed"] > 0)].reset_index(drop=True)

    def hook(self, node: str, hook: str) -> Mapping[str, Any] | None:
        """One row as a mapping (None when the snapshot has no such node or hook)."""
        rows = self.hooks[(self.hooks["node"] == node) & (self.hooks["hook"] == hook)]
        return None if rows.empty else rows.iloc[0].to_dict()

    @property
    def slowest(self) -> Mapping[str, Any] | None:
        """The row with the highest mean among those with packets: the hook to look at first."""
        with_pkts = self.hooks[self.hooks["packets"] > 0]
        if with_pkts.empty:
            return None
        return with_pkts.loc[with_pkts["mean_us"].idxmax()].to_dict()


def _row(entry: Mapping[str, Any]) -> dict[str, Any]:
    h = Histogram.from_entry(entry)  # percentiles of an empty histogram are NaN, and stay NaN in µs
    return {
        "node": entry.get("node") or entry.get("netns"),
        "netns": entry.get("netns"),
        "hook": entry["hook"],
        "packets": int(entry.get("count") or 0),
        "mean_us": h.mean / 1e3 if h.count else math.nan,
        "p50_us": h.percentile(50) / 1e3,
        "p90_us": h.percentile(90) / 1e3,
        "p99_us": h.percentile(99) / 1e3,
        "total_ms": int(entry.get("sum_ns") or 0) / 1e6,
        "unclosed": int(entry.get("unclosed") or 0),
    }


def hook_table(snapshot: Mapping[str, Any]) -> pd.DataFrame:
    """One row per (namespace, hook) of the snapshot, namespaces in snapshot order and hooks in kernel order."""
    rows = [_row(e) for e in snapshot.get("hooks") or ()]
    df = pd.DataFrame(rows, columns=NF_COLUMNS)
    if df.empty:
        return df
    ns_order = {ns: i for i, ns in enumerate(dict.fromkeys(df["netns"]))}
    hook_rank = {h: i for i, h in enumerate(HOOK_ORDER)}
    key = df["netns"].map(ns_order) * len(HOOK_ORDER) + df["hook"].map(lambda h: hook_rank.get(h, len(HOOK_ORDER)))
    return df.assign(_k=key).sort_values("_k", kind="stable").drop(columns="_k").reset_index(drop=True)


def analyze_nf(snapshot: Mapping[str, Any]) -> NfAnalysis:
    """The table and how it was measured, from one NfHookProbe snapshot."""
    return NfAnalysis(hook_table(snapshot), snapshot.get("attach"), tuple(snapshot.get("addresses") or ()),
                      float(snapshot.get("elapsed_s") or 0.0))


def summary(nf: NfAnalysis) -> dict[str, Any]:
    """The "netfilter" block of summary.json: every (node, hook) row (NaN as null) and the slowest hook."""
    hooks = [{k: json_number(v) for k, v in r.items()} for r in nf.hooks.to_dict("records")]
    slow = nf.slowest
    return {
        "attach": nf.attach,
        "addresses": list(nf.addresses),
        "elapsed_s": json_number(nf.elapsed_s),
        "packets": int(nf.hooks["packets"].sum()) if len(nf.hooks) else 0,
        "unclosed": int(nf.hooks["unclosed"].sum()) if len(nf.hooks) else 0,
        "slowest": None if slow is None else {k: json_number(slow[k]) for k in ("node", "hook", "packets",
                                                                                "mean_us", "p99_us")},
        "hooks": hooks,
    }
