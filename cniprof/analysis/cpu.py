# SPDX-License-Identifier: Apache-2.0
"""From a CPU snapshot (cniprof.probes.cpu) to component shares, softirq time per CPU, and CPU cost per hop.

Pure functions over the JSON snapshot, so `cniprof report`/`cniprof diff` work without root on recorded runs.

Time, not sample counts, is what is divided: each sample carries its sampling period (ns), so a run at any
--cpu-freq gives CPU milliseconds. The profile covers every process on the machine (a lab has little else), so
"CPU-µs per packet" is the CPU the whole machine spent in a component divided by the traced flows' packets.

Per-hop CPU: each component maps to hop roles where the mapping is clear (cpu_components.Component.hop_roles:
veth -> the veth xmit hops, bridge -> bridge hops, vxlan -> encap/decap, netfilter and ip -> ip forward, tcp/udp/
socket -> socket delivery, napi -> backlog hops). A component's time is split over the hops it maps to in
proportion to their packet counts, so every such hop gets the component's cost per packet crossing; a hop that
several components map to (ip forward: ip + netfilter) gets their sum. Hops no component maps to stay empty.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import lazy_loader

from cniprof.analysis.cpu_components import COMPONENTS, IDLE, classify, roles_for

if TYPE_CHECKING:
    import pandas as pd
else:  # imported on first use: a command that does not need it does not wait for it
    pd = lazy_loader.load("pandas")

SATURATION_PCT = 90.0  # a CPU spending this much of the wall time in NET_RX+NET_TX softirq is saturated
IDLE_SPARE_PCT = 30.0  # ... and it is an imbalance when another CPU was idle at least this much
NET_SOFTIRQS = ("NET_RX", "NET_TX")

COMPONENT_COLUMNS = ["component", "group", "datapath", "samples", "cpu_ms", "share_pct", "us_per_pkt",
                     "us_per_gb", "hop_roles"]
SOFTIRQ_COLUMNS = ["cpu", "net_rx_ms", "net_rx_pct", "net_tx_ms", "net_tx_pct", "busy_pct", "idle_pct"]
HOP_CPU_COLUMNS = ["cpu_us_per_pkt", "cpu_us_per_gb", "cpu_component"]


def stack(snapshot: Mapping[str, Any], ref: int | None) -> list[str]:
    """Frames (innermost first) of a stack index, [] for None."""
    return list(snapshot["stacks"][ref]) if ref is not None else []


def sample_component(snapshot: Mapping[str, Any], s: Mapping[str, Any]) -> str:
    """The component one aggregated sample entry is charged to."""
    return classify(
        stack(snapshot, s.get("kstack")),
        softirq=s.get("softirq"),
        idle_task=int(s.get("tgid", -1)) == 0,
        profiler=s.get("tgid") is not None and s.get("tgid") == snapshot.get("profiler_tgid"),
        user_mode=s.get("kstack") is None and not s.get("kstack_lost"),
        stack_lost=bool(s.get("kstack_lost")),
    )


def samples_table(snapshot: Mapping[str, Any]) -> pd.DataFrame:
    """One row per aggregated sample entry with its component: cpu, comm, softirq, component, samples, ns."""
    rows = [{"cpu": int(s["cpu"]), "comm": s.get("comm", ""), "softirq": s.get("softirq"),
             "component": sample_component(snapshot, s), "samples": int(s["count"]),
             "ns": int(s.get("period_ns") or 0)} for s in snapshot.get("samples") or ()]
    return pd.DataFrame(rows, columns=["cpu", "comm", "softirq", "component", "samples", "ns"])


def flow_packets(hops: pd.DataFrame | None) -> int:
    """Packets of the traced flows: per direction, the most packets any expected hop saw (the first hops see
    every packet; later ones may miss a few to GRO), summed over directions."""
    if hops is None or len(hops) == 0:
        return 0
    exp = hops[hops["expected"].astype(bool)]
    if len(exp) == 0:
        return 0
    return int(exp.groupby("direction")["packets"].max().sum())


def component_table(snapshot: Mapping[str, Any], packets: int = 0, traffic_bytes: float | None = None
                    ) -> pd.DataFrame:
    """Busy CPU by component (idle excluded; shares sum to 100 %), largest first, with cost per packet/GB."""
    t = samples_table(snapshot)
    busy = t[t["component"] != IDLE]
    g = busy.groupby("component", sort=False).agg(samples=("samples", "sum"), ns=("ns", "sum"))
    total_ns = float(g["ns"].sum())
    gb = traffic_bytes / 1e9 if traffic_bytes else 0.0
    rows = []
    for name, r in g.iterrows():
        comp = COMPONENTS.get(str(name))
        us = float(r["ns"]) / 1e3
        rows.append({
            "component": name,
            "group": comp.group if comp else name,
            "datapath": bool(comp and comp.datapath),
            "samples": int(r["samples"]),
            "cpu_ms": us / 1e3,
            "share_pct": float(r["ns"]) / total_ns * 100.0 if total_ns else math.nan,
            "us_per_pkt": us / packets if packets else math.nan,
            "us_per_gb": us / gb if gb else math.nan,
            "hop_roles": ",".join(roles_for(str(name))),
        })
    df = pd.DataFrame(rows, columns=COMPONENT_COLUMNS)
    return df.sort_values(["cpu_ms", "component"], ascending=[False, True], kind="stable").reset_index(drop=True)


def softirq_table(snapshot: Mapping[str, Any]) -> pd.DataFrame:
    """Per sampled CPU: NET_RX/NET_TX softirq time (ms and % of the wall time) and busy/idle % of the wall time.

    Busy is the time of the CPU's non-idle samples; idle is the rest of the wall time, not the idle task's
    samples: a halted virtual CPU takes no cpu-clock samples at all (seen on a Firecracker guest, where one vCPU
    produced no idle samples while the other did), so counting idle samples would call such a CPU 100 % busy.
    """
    elapsed_ms = float(snapshot.get("elapsed_s") or 0.0) * 1e3
    cpus = sorted({int(c) for c in snapshot.get("cpus") or ()} |
                  {int(e["cpu"]) for e in snapshot.get("softirq") or ()})
    t = samples_table(snapshot)
    rows = []
    for cpu in cpus:
        mine = [e for e in snapshot.get("softirq") or () if int(e["cpu"]) == cpu]
        ms = {name: sum(e["time_ns"] for e in mine if e["name"] == name) / 1e6 for name in NET_SOFTIRQS}
        on = t[t["cpu"] == cpu]
        busy_ms = float(on[on["component"] != IDLE]["ns"].sum()) / 1e6
        busy = min(100.0, busy_ms / elapsed_ms * 100.0) if elapsed_ms else math.nan
        rows.append({
            "cpu": cpu,
            "net_rx_ms": ms["NET_RX"],
            "net_rx_pct": ms["NET_RX"] / elapsed_ms * 100.0 if elapsed_ms else math.nan,
            "net_tx_ms": ms["NET_TX"],
            "net_tx_pct": ms["NET_TX"] / elapsed_ms * 100.0 if elapsed_ms else math.nan,
            "busy_pct": busy,
            "idle_pct": 100.0 - busy,
        })
    return pd.DataFrame(rows, columns=SOFTIRQ_COLUMNS)


@dataclass(frozen=True)
class Finding:
    kind: str
    message: str
    data: Mapping[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, **self.data}


def saturation(softirq: pd.DataFrame, threshold_pct: float = SATURATION_PCT,
               spare_pct: float = IDLE_SPARE_PCT) -> tuple[list[int], list[Finding]]:
    """CPUs whose NET_RX+NET_TX softirq time reached threshold_pct of the wall time, and the finding to report.

    A saturated CPU beside an idle one is the classic single-queue bottleneck (one RX queue or one flow hashed
    to one CPU; RPS/RSS would spread it); all CPUs saturated means the machine itself is the limit.
    """
    if len(softirq) == 0:
        return [], []
    net = softirq["net_rx_pct"].fillna(0) + softirq["net_tx_pct"].fillna(0)
    saturated = [int(c) for c in softirq.loc[net >= threshold_pct, "cpu"]]
    if not saturated:
        return [], []
    spare = [int(c) for c in softirq.loc[(softirq["idle_pct"] >= spare_pct) & (net < threshold_pct), "cpu"]]
    pct = {int(c): round(float(p), 1) for c, p in zip(softirq["cpu"], net)}
    sat_text = ", ".join(f"CPU {c} ({pct[c]:.0f} %)" for c in saturated)
    if spare:
        msg = (f"softirq saturation: {sat_text} in NET_RX/NET_TX while CPU {', '.join(map(str, spare))} "
               f"had idle time: the receive work is not spread (one queue or one flow per CPU; consider RPS/RSS)")
        kind = "softirq_saturation"
    else:
        msg = f"softirq saturation: {sat_text} in NET_RX/NET_TX and no CPU left idle: the CPUs are the limit"
        kind = "softirq_saturation_all"
    return saturated, [Finding(kind, msg, {"cpus": saturated, "idle_cpus": spare,
                                           "net_softirq_pct": {str(c): pct[c] for c in saturated}})]


def hop_cpu(components: pd.DataFrame, hops: pd.DataFrame, traffic_bytes: float | None = None,
            sample_every: int = 1) -> pd.DataFrame:
    """The columns to add to the hop table (same index): cpu_us_per_pkt, cpu_us_per_gb, cpu_component.

    See the module docstring for how a component's time is spread over the hops it maps to.
    """
    out = pd.DataFrame(index=hops.index, columns=HOP_CPU_COLUMNS)
    out["cpu_us_per_pkt"] = math.nan
    out["cpu_us_per_gb"] = math.nan
    out["cpu_component"] = ""
    if len(hops) == 0:
        return out.astype({"cpu_us_per_pkt": "float64", "cpu_us_per_gb": "float64"})
    gb = traffic_bytes / 1e9 if traffic_bytes else 0.0
    live = hops["expected"].astype(bool) & (hops["packets"] > 0)
    role = hops["role"].fillna("").astype(str)
    hop_us = pd.Series(0.0, index=hops.index)
    names: dict[Any, list[str]] = {i: [] for i in hops.index}
    for _, c in components.iterrows():
        keys = roles_for(str(c["component"]))
        if not keys or not c["cpu_ms"]:
            continue
        match = live & role.apply(lambda r, keys=keys: any(k in r for k in keys))
        pk = hops.loc[match, "packets"].astype(float)
        if pk.sum() <= 0:
            continue
        hop_us[match] += float(c["cpu_ms"]) * 1e3 * pk / pk.sum()
        for i in pk.index:
            names[i].append(str(c["component"]))
    has = hop_us > 0
    n = max(1, int(sample_every or 1))
    out.loc[has, "cpu_us_per_pkt"] = hop_us[has] / (hops.loc[has, "packets"].astype(float) * n)
    if gb:
        out.loc[has, "cpu_us_per_gb"] = hop_us[has] / gb
    out["cpu_component"] = [", ".join(names[i]) for i in hops.index]
    return out.astype({"cpu_us_per_pkt": "float64", "cpu_us_per_gb": "float64"})


def _num(x: Any, nd: int = 3) -> Any:
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else round(x, nd)


@dataclass(frozen=True)
class CpuAnalysis:
    components: pd.DataFrame
    softirq: pd.DataFrame
    hop_columns: pd.DataFrame
    saturated_cpus: list[int]
    findings: list[Finding]
    summary: dict[str, Any]


def analyze_cpu(snapshot: Mapping[str, Any], hops: pd.DataFrame | None = None,
                traffic_bytes: float | None = None, sample_every: int = 1) -> CpuAnalysis:
    """Everything the CPU sampler's snapshot says, joined with the hop table: the pure entry point.

    Returns the component and softirq tables, the hops.csv columns (aligned with `hops`' index) and the
    "cpu" block of summary.json. traffic_bytes: payload the generator moved (for the per-GB cost);
    sample_every: the hop probe tracked 1 in N packets, so the flows carried N times the hop counts.
    """
    hops = hops if hops is not None else pd.DataFrame(columns=["direction", "role", "packets", "expected"])
    packets = flow_packets(hops) * max(1, int(sample_every or 1))
    comps = component_table(snapshot, packets, traffic_bytes)
    sirq = softirq_table(snapshot)
    saturated, findings = saturation(sirq)
    cols = hop_cpu(comps, hops, traffic_bytes, sample_every)
    t = samples_table(snapshot)
    busy_ns = float(t[t["component"] != IDLE]["ns"].sum())
    # capacity is wall time x CPUs, not the samples' time: idle CPUs may take no samples (softirq_table)
    total_ns = float(snapshot.get("elapsed_s") or 0.0) * 1e9 * len(snapshot.get("cpus") or ()) or busy_ns
    idle_ns = max(0.0, total_ns - busy_ns)
    top = comps.loc[comps["datapath"].astype(bool)]
    dp_ns = float(top["cpu_ms"].sum()) * 1e6
    summary = {
        "freq_hz": snapshot.get("freq_hz"),
        "elapsed_s": _num(snapshot.get("elapsed_s")),
        "cpus": [int(c) for c in snapshot.get("cpus") or ()],
        "samples": int(t["samples"].sum()),
        "busy_ms": _num(busy_ns / 1e6),
        "idle_pct": _num(idle_ns / total_ns * 100.0) if total_ns else None,
        "datapath_pct": _num(dp_ns / busy_ns * 100.0) if busy_ns else None,
        "datapath_pct_of_capacity": _num(dp_ns / total_ns * 100.0) if total_ns else None,
        "top_component": str(top.iloc[0]["component"]) if len(top) else None,
        "packets": packets,
        "bytes": int(traffic_bytes) if traffic_bytes else None,
        "components": {
            str(r["component"]): {
                "group": r["group"], "datapath": bool(r["datapath"]), "samples": int(r["samples"]),
                "cpu_ms": _num(r["cpu_ms"]), "share_pct": _num(r["share_pct"]),
                "us_per_pkt": _num(r["us_per_pkt"], 4), "us_per_gb": _num(r["us_per_gb"], 1),
            } for _, r in comps.iterrows()
        },
        "softirq": {
            str(int(r["cpu"])): {k: _num(r[k]) for k in ("net_rx_ms", "net_rx_pct", "net_tx_ms", "net_tx_pct",
                                                         "busy_pct", "idle_pct")}
            for _, r in sirq.iterrows()
        },
        "saturated_cpus": saturated,
        "findings": [f.as_dict() for f in findings],
        "counters": dict(snapshot.get("counters") or {}),
    }
    return CpuAnalysis(comps, sirq, cols, saturated, findings, summary)


def traffic_bytes(traffic: Mapping[str, Any] | None) -> float | None:
    """Payload bytes a generator result reports (iperf3 "bytes", the UDP burst's "received_bytes"), else None."""
    for key in ("bytes", "received_bytes", "sent_bytes"):
        v = (traffic or {}).get(key)
        if v:
            return float(v)
    return None


def with_cpu(analysis: Any, cpu: CpuAnalysis) -> Any:
    """The hop Analysis with the CPU columns appended to its hop table (what hops.csv then carries)."""
    from dataclasses import replace

    return replace(analysis, hops=pd.concat([analysis.hops, cpu.hop_columns], axis=1))
