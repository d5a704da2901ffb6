# SPDX-License-Identifier: Apache-2.0
"""The report to attach to a bug, for any run directory: report.html (self-contained), report.md (paste-ready),
hops-flame.png and cpu-flame.png, and with `bundle` the run's files as cniprof-<cni>-<date>.tar.gz."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cniprof.report import bundle as bundles
from cniprof.report import flame_png, html, markdown
from cniprof.report.rundir import COMPARISON, TRACE, RunDir

REPORT_DIR = "report"  # where `cniprof report DIR` and `trace --export DIR` put it: DIR/report/
REPORT_HTML = "report.html"
REPORT_MD = "report.md"


@dataclass
class Written:
    files: list[Path] = field(default_factory=list)
    bundle: bundles.Bundle | None = None

    @property
    def html(self) -> Path:
        return next(p for p in self.files if p.name == REPORT_HTML)


def _write_text(path: Path, text: str) -> Path:
    """Temp file + rename: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def flame_pngs(run: RunDir, out: Path) -> list[Path]:
    """hops-flame.png/cpu-flame.png of a trace; per model (hops-flame-<model dir>.png ...) of a comparison."""
    if run.kind == TRACE and run.trace is not None:
        return flame_png.write(run.trace, out)
    if run.kind == COMPARISON:
        return [p for t in run.models for p in flame_png.write(t, out, suffix=f"-{t.name}")]
    return []


def write(run: RunDir, out: Path, *, images: Sequence[Path] = (), bundle: bool = False) -> Written:
    """Write the report files into out (created if needed); `images`: graphs to embed in report.html (a study's
    or tune's PNGs). The bundle comes last, so that it holds the report too when out is inside the run."""
    out.mkdir(parents=True, exist_ok=True)
    done = Written()
    done.files += flame_pngs(run, out)
    bundle_name = bundles.name(run)
    done.files.append(_write_text(out / REPORT_MD, markdown.render(run, bundle_name, bundled=bundle)))
    done.files.append(_write_text(out / REPORT_HTML, html.render(run, images)))
    if bundle:
        done.bundle = bundles.write(run, out)
    return done
