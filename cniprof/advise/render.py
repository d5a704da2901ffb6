# SPDX-License-Identifier: Apache-2.0
"""Findings as a Rich table, findings.json and findings.csv."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from cniprof.advise.finding import FAULT, Finding
from cniprof.files import replacing, write_json

FINDINGS_JSON = "findings.json"
FINDINGS_CSV = "findings.csv"
CSV_COLUMNS = ["rank", "model", "path", "variant", "runs", "severity", "share", "kind", "title", "evidence",
               "advice", "tune"]


def _advice_text(a: dict[str, Any]) -> str:
    tune = f" [tune {a['tune']}]" if a.get("tune") else ""
    return f"{a['title']}{tune}: {a['how']} (risk: {a['risk']})"


def table(findings: list[Finding], title: str = "findings", top: int | None = None, compact: bool = False) -> Table:
    """compact: advice as titles and tune names only, three evidence lines (the end of `cniprof trace`)."""
    t = Table(title=title, title_justify="left", show_lines=True)
    study = any(f.group for f in findings)
    t.add_column("#", justify="right")
    if study:
        t.add_column("model · path · variant")
    t.add_column("severity")
    t.add_column("share", justify="right")
    t.add_column("finding", ratio=3)
    t.add_column("evidence", ratio=3)
    t.add_column("advice", ratio=4)
    for f in findings[:top] if top else findings:
        sev = Text(f.severity, style="bold red" if f.severity == FAULT else "cyan")
        row: list[str | Text] = [str(f.rank)]
        if study:
            g = f.group
            row.append(f"{g.get('model')} · {g.get('path')} · {g.get('variant')} ({g.get('runs')} runs)")
        row += [sev, f"{f.share:.0%}", Text(f.title),
                Text("\n".join(e.text() for e in f.evidence[:3 if compact else 8]))]
        # Text: "[tune x]" must not be read as Rich markup
        lines = [f"• {a['title']}" + (f" [tune {a['tune']}]" if a.get("tune") else "") if compact
                 else f"• {_advice_text(a)}" for a in f.advice]
        row.append(Text("\n".join(lines) or "-"))
        t.add_row(*row)
    if not findings:
        t.add_row("-", *([""] if study else []), "", "", "no finding (no hop table with packets)", "", "")
    return t


def document(findings: list[Finding], source: str, kind: str) -> dict[str, Any]:
    return {"version": 1, "source": source, "kind": kind,
            "faults": sum(f.severity == FAULT for f in findings), "findings": [f.to_dict() for f in findings]}


def write(out_dir: str | Path, findings: list[Finding], source: str, kind: str) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {FINDINGS_JSON: out / FINDINGS_JSON, FINDINGS_CSV: out / FINDINGS_CSV}
    write_json(paths[FINDINGS_JSON], document(findings, source, kind), default=str)
    with replacing(paths[FINDINGS_CSV]) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for f in findings:
            w.writerow({"rank": f.rank, **{k: f.group.get(k, "") for k in ("model", "path", "variant", "runs")},
                        "severity": f.severity, "share": round(f.share, 4), "kind": f.kind, "title": f.title,
                        "evidence": "; ".join(e.text() for e in f.evidence),
                        "advice": " | ".join(a["title"] for a in f.advice),
                        "tune": " ".join(a["tune"] for a in f.advice if a.get("tune"))})
    return paths
