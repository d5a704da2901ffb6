# SPDX-License-Identifier: Apache-2.0
"""`cniprof report DIR --bundle`: cniprof-<cni>-<date>.tar.gz, the run directory as one archive to attach to a bug.

It holds every regular file under the run directory (raw snapshots included: snapshot.json, cpu.json, nf.json,
nodestate.json), so `cniprof report` renders the same report.html from it on any machine, without root. Nothing
from outside the directory goes in: symbolic links are left out (and listed), as are earlier bundles. The archive
is written under a temporary name and renamed, so a reader never sees half of one.
"""

from __future__ import annotations

import os
import re
import tarfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from cniprof.files import replacing
from cniprof.report.rundir import STUDY, RunDir

PREFIX = "cniprof-"
SUFFIX = ".tar.gz"
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


@dataclass(frozen=True)
class Bundle:
    path: Path
    size: int  # bytes
    files: int
    skipped_links: tuple[str, ...]  # relative paths of symbolic links left out


def _recorded_start(run: RunDir) -> datetime | None:
    text = None
    if run.kind == STUDY and run.study is not None:
        text = run.study.metadata.get("started")
    elif run.traces:
        text = run.traces[0].summary.get("started")
    if not text:
        return None
    try:
        return datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%S%z")
    except ValueError:
        return None


def _first_file(run: RunDir) -> Path:
    for name in ("metadata.json", "summary.json", "compare.csv", "tune.csv"):
        if (run.root / name).is_file():
            return run.root / name
    return run.root


def run_date(run: RunDir) -> str:
    """When the run was recorded: its recorded start, else when its first file was written (tar keeps that
    time, so an unpacked bundle names itself the same)."""
    when = _recorded_start(run) or datetime.fromtimestamp(_first_file(run).stat().st_mtime, tz=timezone.utc)
    return when.astimezone(timezone.utc).strftime("%Y-%m-%d-%H%M")


def name(run: RunDir) -> str:
    """cniprof-<cni>-<date>.tar.gz; a comparison's or study's CNIs joined by '+' (the scenario's name when
    there are more than three)."""
    cnis = run.cnis
    if len(cnis) > 3 and run.study is not None:
        label = str(run.study.metadata.get("scenario", {}).get("name") or "study")
    else:
        label = "+".join(cnis) or "run"
    return f"{PREFIX}{_UNSAFE.sub('_', label)}-{run_date(run)}{SUFFIX}"


def members(root: Path) -> tuple[list[Path], list[Path]]:
    """(regular files, symbolic links) under root, sorted; links are not followed, bundles and temporary files
    are left out."""
    files: list[Path] = []
    links: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        for d in list(dirnames):
            if (here / d).is_symlink():
                links.append(here / d)
                dirnames.remove(d)
        for f in filenames:
            p = here / f
            if p.is_symlink():
                links.append(p)
            elif p.is_file() and not _own_output(f):
                files.append(p)
    return sorted(files), sorted(links)


def _own_output(filename: str) -> bool:
    return (filename.startswith(PREFIX) and filename.endswith(SUFFIX)) or filename.endswith(".tmp")


def write(run: RunDir, out_dir: Path) -> Bundle:
    """Write the bundle into out_dir (atomically) and say what it holds."""
    root = run.root.resolve()
    files, links = members(root)
    bundle_name = name(run)
    top = bundle_name[: -len(SUFFIX)]
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / bundle_name
    with replacing(final) as tmp, tarfile.open(tmp, mode="w:gz") as tar:
        for f in files:
            rel = f.relative_to(root)
            info = tar.gettarinfo(str(f), arcname=f"{top}/{rel.as_posix()}")
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with f.open("rb") as src:
                tar.addfile(info, src)
    return Bundle(final, final.stat().st_size, len(files), tuple(str(p.relative_to(root)) for p in links))
