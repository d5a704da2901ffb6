# SPDX-License-Identifier: Apache-2.0
"""Write a run's analysis to files: hops.csv/.parquet, drops.csv, summary.json and the raw snapshot.json.

The raw snapshot is written beside the derived tables so that any run can be re-analysed later (with a newer
chain or a fixed analysis) without root; CSV is for people and spreadsheets, Parquet keeps the dtypes for pandas.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from cniprof.analysis import path_check
from cniprof.analysis.hops import ChainLike, is_labelled
from cniprof.analysis.summary import Analysis, analyze, summary_dict

HOPS_CSV = "hops.csv"
HOPS_PARQUET = "hops.parquet"
DROPS_CSV = "drops.csv"
SUMMARY_JSON = "summary.json"
SNAPSHOT_JSON = "snapshot.json"
NODESTATE_JSON = "nodestate.json"

DROPS_EXPORT_COLUMNS = ["point", "node", "device", "reason", "count"]


def _write_json(path: Path, data: Any) -> None:
    """Write atomically (temp file + rename) so a reader never sees half a file, and refuse NaN (invalid JSON)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, allow_nan=False, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def export(
    out_dir: str | os.PathLike[str],
    snapshot: Mapping[str, Any],
    chain: ChainLike | None = None,
    *,
    cni: str | None,
    mode: str | None,
    duration_s: float | None = None,
    traffic: Any = None,
    probes: Iterable[str] | None = None,
    topology: Any = None,
    analysis: Analysis | None = None,
    extra: Mapping[str, Any] | None = None,
    nodestate: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write the five files into out_dir (created if needed) and return {file name: path}; with `nodestate`
    (cniprof.node.state.window) also nodestate.json.

    Pass `analysis` when the caller already has one (the final table was rendered from it) to guarantee the
    files show the same numbers; otherwise the snapshot is analysed here (`chain` is needed only when the
    snapshot's hops are not labelled). `probes` defaults to the programs the snapshot lists.
    """
    if analysis is None:
        analysis = analyze(snapshot, chain, topology)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in (HOPS_CSV, HOPS_PARQUET, DROPS_CSV, SUMMARY_JSON, SNAPSHOT_JSON)}

    hops = analysis.hops.reset_index(drop=True)
    hops.to_csv(paths[HOPS_CSV], index=False)
    hops.to_parquet(paths[HOPS_PARQUET], index=False)
    drops: pd.DataFrame = analysis.drops.reindex(columns=DROPS_EXPORT_COLUMNS)
    drops.to_csv(paths[DROPS_CSV], index=False)
    summary = summary_dict(
        analysis, cni=cni, mode=mode, duration_s=duration_s, traffic=traffic, probes=probes, extra=extra
    )
    # observed vs the model's chain; needs the probe's labels (an unlabelled snapshot has no chain in it)
    summary["path_check"] = path_check.check(snapshot).to_dict() if is_labelled(snapshot) else None
    _write_json(paths[SUMMARY_JSON], summary)
    _write_json(paths[SNAPSHOT_JSON], snapshot)
    if nodestate is not None:
        paths[NODESTATE_JSON] = out / NODESTATE_JSON
        _write_json(paths[NODESTATE_JSON], nodestate)
    return paths
