# SPDX-License-Identifier: Apache-2.0
"""Paired before/after measurements -> gain, its 95 % confidence interval and a verdict (pure logic).

Why pairs in ABBA order: on a shared machine the throughput drifts over minutes; comparing each tuned run with
the baseline run next to it, and alternating which of the two goes first (pair 1 baseline then tuned, pair 2
tuned then baseline, ...), cancels a linear drift instead of crediting it to the tuning.

Why a t interval on log-ratios: a gain is a ratio (tuned / baseline), and ratios are symmetric on a log scale
(x2 and x0.5 are equally far from 1). The mean of the pairs' log-gains with Student's t (few pairs: 3-10) gives
the CI of the geometric-mean gain; exp() maps it back. The reported point estimate is the median of the pairs'
gains, which is robust to one odd pair. One pair gives no interval, hence no verdict beyond "no measurable effect".
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from cniprof.analysis.stats import t975

CI_METHOD = "95 % CI of the geometric-mean gain: Student's t on the pairs' log(tuned/baseline)"
HELPS, HURTS, NO_EFFECT = "helps", "hurts", "no measurable effect"
BASELINE, TUNED = "baseline", "tuned"


def order(pair: int) -> tuple[str, str]:
    """Which arm runs first in pair number `pair` (0-based): AB, BA, AB, ... (ABBA across consecutive pairs)."""
    return (BASELINE, TUNED) if pair % 2 == 0 else (TUNED, BASELINE)


def gain(baseline: float, tuned: float, higher_is_better: bool) -> float:
    """> 1 means the tuning is better, whichever direction the metric improves in."""
    return tuned / baseline if higher_is_better else baseline / tuned


def _usable(v: float | None) -> bool:
    return v is not None and math.isfinite(v) and v > 0


@dataclass(frozen=True)
class Effect:
    pairs: int  # pairs with a usable value on both sides
    dropped: int  # pairs left out (a run failed or printed 0)
    baseline_median: float | None
    tuned_median: float | None
    gain_median: float | None
    ci_low: float | None
    ci_high: float | None
    verdict: str


def effect(baseline: list[float | None], tuned: list[float | None], higher_is_better: bool) -> Effect:
    """baseline[i] and tuned[i] are pair i's two runs."""
    if len(baseline) != len(tuned):
        raise ValueError("baseline and tuned must have one value per pair")
    kept = [(float(b), float(t)) for b, t in zip(baseline, tuned) if b is not None and t is not None
            and _usable(b) and _usable(t)]
    dropped = len(baseline) - len(kept)
    if not kept:
        return Effect(0, dropped, None, None, None, None, None, NO_EFFECT)
    gains = [gain(b, t, higher_is_better) for b, t in kept]
    base_med = statistics.median(b for b, _ in kept)
    tuned_med = statistics.median(t for _, t in kept)
    if len(kept) < 2:
        return Effect(1, dropped, base_med, tuned_med, gains[0], None, None, NO_EFFECT)
    logs = [math.log(g) for g in gains]
    half = t975(len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
    mean = statistics.fmean(logs)
    low, high = math.exp(mean - half), math.exp(mean + half)
    return Effect(len(kept), dropped, base_med, tuned_med, statistics.median(gains), low, high, verdict(low, high))


def verdict(ci_low: float | None, ci_high: float | None) -> str:
    if ci_low is None or ci_high is None:
        return NO_EFFECT
    if ci_low > 1.0:
        return HELPS
    if ci_high < 1.0:
        return HURTS
    return NO_EFFECT
