# SPDX-License-Identifier: Apache-2.0
"""Repetitions -> median and a 95 % confidence interval; results whose spread is too wide are flagged.

Why Student's t on the mean (reported next to the median): studies have few repetitions (3-5), where an
order-statistic CI of the median does not exist (it needs n >= 6) and a bootstrap is meaningless. The flag compares
the CI half-width with the median, so a flagged result means "repeat it: the runs disagree", not "it is slow".
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING

import lazy_loader

if TYPE_CHECKING:
    import pandas as pd
else:  # imported on first use: a command that does not need it does not wait for it
    pd = lazy_loader.load("pandas")

# two-sided 95 % quantiles of Student's t, df 1..30 (beyond: the normal 1.96)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


KEYS = ["model", "path", "variant", "generator"]  # what identifies a study's run (repetitions aside)
STATS_COLUMNS = [*KEYS, "tool", "metric", "primary", "higher_is_better", "n", "median", "mean", "ci_low",
                 "ci_high", "spread_pct", "flagged"]


@dataclass(frozen=True)
class Summary:
    n: int
    median: float
    mean: float
    ci_low: float | None  # None with a single repetition
    ci_high: float | None
    spread_pct: float | None  # CI half-width as % of |median|
    flagged: bool


def t975(df: int) -> float:
    return _T975[df - 1] if 1 <= df <= len(_T975) else 1.96


def summarize(values: list[float], max_spread_pct: float = 10.0) -> Summary:
    """Median, mean and the mean's 95 % CI; flagged when the half-width exceeds max_spread_pct of the median."""
    clean = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not clean:
        raise ValueError("no values to summarize")
    med, mean = statistics.median(clean), statistics.fmean(clean)
    if len(clean) < 2:
        return Summary(1, med, mean, None, None, None, False)
    half = t975(len(clean) - 1) * statistics.stdev(clean) / math.sqrt(len(clean))
    spread = 100.0 * half / abs(med) if med else (0.0 if half == 0 else math.inf)
    return Summary(len(clean), med, mean, mean - half, mean + half, spread, spread > max_spread_pct)


def stats_table(results: pd.DataFrame, max_spread_pct: float) -> pd.DataFrame:
    """A study's results.csv rows -> one `summarize` row per run key, tool and metric (stats.csv)."""
    rows = []
    if results.empty:
        return pd.DataFrame(columns=STATS_COLUMNS)
    group_keys = [*KEYS, "tool", "metric", "primary", "higher_is_better"]
    for key, group in results.dropna(subset=["value"]).groupby(group_keys, sort=False):
        s = summarize(list(group["value"]), max_spread_pct)
        rows.append({**dict(zip(group_keys, key)), "n": s.n, "median": s.median, "mean": s.mean,
                     "ci_low": s.ci_low, "ci_high": s.ci_high, "spread_pct": s.spread_pct, "flagged": s.flagged})
    return pd.DataFrame(rows, columns=STATS_COLUMNS)
