# SPDX-License-Identifier: Apache-2.0
"""A finding: what was seen, how much of the run it accounts for, the numbers behind it, and what to try."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FAULT = "fault"  # a threshold is exceeded: a problem worth fixing
OBSERVATION = "observation"  # true and useful (e.g. the dominant hop of a healthy path), not a problem


@dataclass(frozen=True)
class Evidence:
    """One number a reader can find in the run's tables: where (hop, device, node, CPU), metric, value and the
    threshold it was compared with (None when it is context, not a test)."""

    where: str
    metric: str
    value: Any
    threshold: Any = None
    source: str = ""  # the file holding it: hops.csv, nodestate.json, nf.csv, summary.json, drops.csv

    def text(self) -> str:
        v = f"{self.value:.3g}" if isinstance(self.value, float) else str(self.value)
        t = "" if self.threshold is None else f" (threshold {self.threshold})"
        return f"{self.where}: {self.metric} = {v}{t}"


@dataclass
class Finding:
    kind: str
    title: str
    severity: str
    share: float  # fraction (0..1) of end-to-end latency or of busy CPU it accounts for: the ranking key
    evidence: list[Evidence] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)  # what the advice needs: cni, devices, hop, ...
    advice: list[dict[str, Any]] = field(default_factory=list)
    group: dict[str, Any] = field(default_factory=dict)  # study: model, path, variant (and runs seen in)
    rank: int = 0

    @property
    def sort_key(self) -> tuple[int, float]:
        return (0 if self.severity == FAULT else 1, -self.share)

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, **self.group, "kind": self.kind, "severity": self.severity,
                "share": round(self.share, 4), "title": self.title,
                "evidence": [vars(e) for e in self.evidence], "advice": self.advice}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Finding:
        """Back from findings.json (to_dict's output)."""
        group: dict[str, Any] = {k: d[k] for k in ("model", "path", "variant", "runs") if k in d}
        return cls(d["kind"], d["title"], d["severity"], float(d["share"]),
                   [Evidence(**e) for e in d.get("evidence", [])], {}, list(d.get("advice", [])), group,
                   int(d.get("rank", 0)))
