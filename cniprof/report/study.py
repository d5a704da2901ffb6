# SPDX-License-Identifier: Apache-2.0
"""A study's run directory -> the comparison table (each model also as % of `host`) and its Rich rendering.

Pure file reading (no root, no kernel): `cniprof run` prints this table at the end and `cniprof report`
re-renders it later from the same files. Statistics are recomputed from results.csv (the generators' numbers),
so the table never depends on a derived file being current.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from rich.table import Table
from rich.text import Text

from cniprof.advise.engine import advise_study
from cniprof.advise.finding import Finding
from cniprof.advise.render import FINDINGS_JSON
from cniprof.analysis.compare import BASELINE, pct_of
from cniprof.analysis.stats import stats_table
from cniprof.errors import UsageError

HOST = BASELINE  # the model every other one is expressed as a % of
# metrics shown per tool, in order (the first is the tool's primary metric)
TABLE_METRICS = {
    "ping": ["latency_p50_us", "latency_p99_us", "loss_pct"],
    "iperf3": ["throughput_bps", "retransmits", "loss_pct"],
    "sockperf": ["latency_p50_us", "latency_p99_us", "latency_p999_us"],
    "connect_rate": ["connects_per_s", "latency_p50_us"],
    "wrk": ["requests_per_s", "throughput_bps", "latency_p50_us", "latency_p99_us", "errors"],
}


@dataclass
class Study:
    root: Path
    metadata: dict[str, Any]
    results: pd.DataFrame
    stats: pd.DataFrame
    hops: pd.DataFrame  # empty when the study was not traced
    cpu: pd.DataFrame = field(default_factory=pd.DataFrame)  # empty unless the scenario said `cpu: true`

    @property
    def models(self) -> list[str]:
        """Models in run order, host first (it is the baseline)."""
        seen = list(dict.fromkeys(self.results["model"]))
        return sorted(seen, key=lambda m: m != HOST)


def load(root: str | Path) -> Study:
    """Read a run directory; UsageError (one line) when it is not one."""
    path = Path(root)
    meta_path = path / "metadata.json"
    if not meta_path.is_file():
        raise UsageError(f"{path} is not a cniprof run directory (no metadata.json)")
    try:
        meta = json.loads(meta_path.read_text())
        results = pd.read_csv(path / "results.csv")
    except (OSError, ValueError) as e:
        raise UsageError(f"{path}: cannot read the run directory: {e}".splitlines()[0]) from None
    if results.empty:
        raise UsageError(f"{path}: the study has no completed run")
    hops_path = path / "hops.csv"
    hops = pd.read_csv(hops_path) if hops_path.is_file() else pd.DataFrame()
    stats = stats_table(results, float(meta.get("max_spread_pct", 10.0)))
    cpu_path = path / "cpu.csv"
    cpu = pd.read_csv(cpu_path) if cpu_path.is_file() else pd.DataFrame()
    return Study(path, meta, results, stats, hops, cpu)


def comparison(study: Study) -> pd.DataFrame:
    """One row per (path, variant, generator, metric, model): median, CI, flag and % of host's median."""
    s = study.stats
    s = s[s.apply(lambda r: r["metric"] in TABLE_METRICS.get(r["tool"], [r["metric"]]), axis=1)].copy()
    host = s[s["model"] == HOST].set_index(["variant", "generator", "metric"])["median"]

    def pct(row: pd.Series) -> float | None:
        return pct_of(row["median"], host.get((row["variant"], row["generator"], row["metric"])))

    s["pct_of_host"] = s.apply(pct, axis=1) if not s.empty else []
    order = {m: i for i, m in enumerate(study.models)}
    gens = {g: i for i, g in enumerate(dict.fromkeys(study.results["generator"]))}
    s["_m"] = s["model"].map(order)
    s["_g"] = s["generator"].map(gens)
    s["_k"] = s.apply(lambda r: TABLE_METRICS.get(r["tool"], [r["metric"]]).index(r["metric"]), axis=1)
    # paths and variants in the scenario's order (services-0, -1000, -10000), not alphabetical
    for col in ("path", "variant"):
        s[f"_{col}"] = s[col].map({v: i for i, v in enumerate(dict.fromkeys(study.results[col]))})
    return (s.sort_values(["_path", "_variant", "_g", "_k", "_m"])
            .drop(columns=["_m", "_g", "_k", "_path", "_variant"]))


def fmt(metric: str, value: float | None) -> str:
    """A value in its metric's natural unit."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if metric.endswith("_bps"):
        return f"{value / 1e9:.2f} Gbit/s" if value >= 1e8 else f"{value / 1e6:.1f} Mbit/s"
    if metric.endswith("_us"):
        return f"{value / 1000:.2f} ms" if value >= 10000 else f"{value:.1f} µs"
    if metric.endswith("_per_s"):
        return f"{value:,.0f}/s"
    if metric.endswith("_pct"):
        return f"{value:.2f} %"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:.2f}"


def rich_table(study: Study, table: pd.DataFrame | None = None) -> Table:
    """Rows: generator and metric; columns: models (median, % of host; `!` marks a too-wide spread)."""
    table = comparison(study) if table is None else table
    models = study.models
    t = Table(title=f"{study.metadata['scenario']['name']}: median over repetitions (% of host)",
              title_justify="left")
    shown = label_columns(table)
    for col in shown:
        t.add_column(col)
    for m in models:
        t.add_column(m, justify="right")
    for labels, cells in table_rows(table, models, shown):
        t.add_row(*labels, *(Text(text, style="yellow" if flagged else "") if text != "-" else Text("-", style="dim")
                             for text, flagged in cells))
    t.caption = f"! = 95 % CI half-width > {study.metadata.get('max_spread_pct', 10)} % of the median: repeat it"
    return t


def label_columns(table: pd.DataFrame) -> list[str]:
    """Path and variant only when the study has several (they would repeat one value on every row)."""
    return [c for c in ("path", "variant") if table[c].nunique() > 1] + ["generator", "metric"]


def table_rows(table: pd.DataFrame, models: list[str], shown: list[str]):
    """(row labels, [(cell text, flagged)] per model) of the comparison, for the Rich and the Markdown table."""
    for key, group in table.groupby(["path", "variant", "generator", "metric"], sort=False):
        by_model = {r["model"]: r for _, r in group.iterrows()}
        cells = []
        for m in models:
            r = by_model.get(m)
            if r is None:
                cells.append(("-", False))
                continue
            text = fmt(key[3], r["median"])
            if r["pct_of_host"] is not None and not pd.isna(r["pct_of_host"]) and m != HOST:
                text += f" ({r['pct_of_host']:.0f}%)"
            cells.append((text + (" !" if bool(r["flagged"]) else ""), bool(r["flagged"])))
        labels = dict(zip(("path", "variant", "generator", "metric"), key))
        yield [str(labels[c]) for c in shown], cells


CPU_TOP = 6  # components shown per (model, path, variant, generator); the rest are in cpu.csv


def cpu_summary(study: Study) -> pd.DataFrame:
    """Median over repetitions per (model, path, variant, generator): each component's share of busy CPU and µs
    per packet, and per CPU the NET_RX softirq % (rows `component` = "NET_RX cpu N"). Empty without CPU data."""
    c = study.cpu
    if c.empty:
        return pd.DataFrame(columns=["model", "path", "variant", "generator", "component", "share_pct",
                                     "us_per_pkt", "net_rx_pct"])
    keys = ["model", "path", "variant", "generator"]
    comps = (c[c["kind"] == "component"].groupby([*keys, "component"], sort=False)[["share_pct", "us_per_pkt"]]
             .median().reset_index().sort_values([*keys, "share_pct"], ascending=[True] * 4 + [False], kind="stable"))
    comps = comps.groupby(keys, sort=False).head(CPU_TOP)
    sirq = c[c["kind"] == "softirq"].copy()
    sirq["component"] = "NET_RX cpu " + sirq["cpu"].astype(int).astype(str)
    sirq = sirq.groupby([*keys, "component"], sort=False)[["net_rx_pct"]].median().reset_index()
    return pd.concat([comps, sirq], ignore_index=True)


def cpu_rich_table(study: Study, table: pd.DataFrame | None = None) -> Table | None:
    """The CPU table of a study run with `cpu: true` (None otherwise)."""
    table = cpu_summary(study) if table is None else table
    if table.empty:
        return None
    t = Table(title=f"{study.metadata['scenario']['name']}: CPU (median over repetitions; top {CPU_TOP} "
              "components by share of busy CPU, NET_RX softirq % of each CPU)", title_justify="left")
    for col in ("model", "path", "variant", "generator", "component"):
        t.add_column(col)
    for col in ("% of busy CPU", "µs/packet", "NET_RX %"):
        t.add_column(col, justify="right")
    for _, r in table.iterrows():
        t.add_row(str(r["model"]), str(r["path"]), str(r["variant"]), str(r["generator"]), str(r["component"]),
                  fmt("share_pct", r.get("share_pct")), fmt("x_us", r.get("us_per_pkt")).replace(" µs", ""),
                  fmt("net_rx_pct", r.get("net_rx_pct")))
    return t


def findings(study: Study) -> list[Any]:
    """The study's ranked findings (cniprof.advise): findings.json when `cniprof advise` wrote one, else computed
    from the traced runs; [] for an untraced study."""

    saved = study.root / FINDINGS_JSON
    if saved.is_file():
        try:
            return [Finding.from_dict(d) for d in json.loads(saved.read_text()).get("findings", [])]
        except (OSError, ValueError, KeyError, TypeError):
            pass  # unreadable or older: compute it again
    return advise_study(study.root)
