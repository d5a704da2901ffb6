# SPDX-License-Identifier: Apache-2.0
"""Write the netfilter cost of a run (`cniprof trace --nf --export DIR`): nf.csv and the raw nf.json.

nf.csv holds every (node, hook) row, including hooks no traced packet crossed, so two runs' files line up row by
row; nf.json is the probe's snapshot, kept (like snapshot.json and cpu.json) so the run can be re-analysed
without root. The "netfilter" block of summary.json comes from cniprof.analysis.nf.summary via export()'s extra.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cniprof.analysis.nf import NfAnalysis

NF_CSV = "nf.csv"
NF_JSON = "nf.json"


def export_nf(out_dir: str | os.PathLike[str], nf: NfAnalysis, snapshot: Mapping[str, Any]) -> dict[str, Path]:
    """Write nf.csv and nf.json into out_dir (created if needed); returns {file name: path}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {NF_CSV: out / NF_CSV, NF_JSON: out / NF_JSON}
    nf.hooks.to_csv(paths[NF_CSV], index=False, float_format="%.3f")
    tmp = paths[NF_JSON].with_name(NF_JSON + ".tmp")
    tmp.write_text(json.dumps(snapshot, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, paths[NF_JSON])
    return paths
