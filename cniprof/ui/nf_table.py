# SPDX-License-Identifier: Apache-2.0
"""The netfilter table of the final report (`cniprof trace --nf`): cost per node and IPv4 hook.

A pure function of an NfAnalysis (cniprof.analysis.nf), like the other renderables, so tests render it into a
recording Console. Only hooks a traced packet reached are listed; the slowest one is bold because it is where
the rules (or conntrack/NAT) cost the most per packet, and any unclosed count is red because those packets never
left the hook (dropped or stolen there).
"""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from cniprof.analysis.nf import NfAnalysis
from cniprof.ui.tables import fmt_count, fmt_us


def render_nf_table(nf: NfAnalysis, title: str = "netfilter cost per hook") -> RenderableType:
    """node, hook, packets, mean/p50/p99 µs and unclosed for every hook with traced packets; a note when none."""
    rows = nf.active
    if rows.empty:
        return Text(f"{title}: no traced packet crossed a netfilter hook (addresses {', '.join(nf.addresses)})",
                    style="dim")
    # the probe filters on addresses, not flows: replies to the traced pods are counted on the same rows
    t = Table(title=f"{title} ({nf.attach}; first → last priority)", title_justify="left",
              caption=f"packets from or to {', '.join(nf.addresses)} (both directions)", caption_justify="left")
    for name in ("node", "hook"):
        t.add_column(name, no_wrap=True)
    for name in ("packets", "mean µs", "p50 µs", "p99 µs", "unclosed"):
        t.add_column(name, justify="right", no_wrap=True)
    slow = nf.slowest
    for r in rows.to_dict("records"):
        hot = slow is not None and (r["node"], r["hook"]) == (slow["node"], slow["hook"])
        t.add_row(str(r["node"]), str(r["hook"]), fmt_count(r["packets"]), fmt_us(r["mean_us"]), fmt_us(r["p50_us"]),
                  fmt_us(r["p99_us"]), Text(fmt_count(r["unclosed"]), style="bold red" if r["unclosed"] else ""),
                  style="bold" if hot else None)
    note = Text("unclosed = entered the hook and never left it: dropped or stolen there", style="dim")
    return Group(t, note) if int(rows["unclosed"].sum()) else t
