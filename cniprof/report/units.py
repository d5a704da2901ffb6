# SPDX-License-Identifier: Apache-2.0
"""Numbers as report.html and report.md print them ("–" for a value that was not measured)."""

from __future__ import annotations

import math
from typing import Any

DASH = "–"


def num(x: Any) -> float | None:
    """x as a finite float, else None (NaN, None, text)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def fmt_us(x: Any) -> str:
    v = num(x)
    if v is None:
        return DASH
    return f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}" if abs(v) < 1000 else f"{v:,.0f}"


def fmt_count(x: Any) -> str:
    v = num(x)
    return DASH if v is None else f"{v:,.0f}"


def fmt_pct(x: Any, digits: int = 1) -> str:
    v = num(x)
    return DASH if v is None else f"{v:.{digits}f} %"


def fmt_bps(x: Any) -> str:
    v = num(x)
    if v is None:
        return DASH
    return f"{v / 1e9:.2f} Gbit/s" if v >= 1e8 else f"{v / 1e6:.1f} Mbit/s"


def fmt_gain(x: Any) -> str:
    v = num(x)
    return DASH if v is None else f"×{v:.3f}"


def fmt_compared(value: Any, unit: Any, pct: Any) -> str:
    """A cell of the trace comparison: the value in its unit, and (n %) of host's when known."""
    v = num(value)
    if v is None:
        return DASH
    text = f"{v:.2f}" if unit == "Gbit/s" else fmt_us(v) if unit == "µs" else fmt_count(v)
    p = num(pct)
    return text + (f" ({p:.0f} %)" if p is not None else "")


def started_text(started: Any) -> str | None:
    """2026-11-30T14:05:09+0100 as 2026-11-30 14:05:09 +0100 (None when not recorded)."""
    if not started:
        return None
    text = str(started)
    return f"{text[:10]} {text[11:19]} {text[19:]}".strip() if len(text) >= 19 and text[10] == "T" else text
