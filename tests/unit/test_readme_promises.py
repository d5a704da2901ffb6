# SPDX-License-Identifier: Apache-2.0
"""What the README promises, read from the README itself: the command list of its Usage block, the columns it
names for hops.csv, drops.csv and nf.csv, and the `--sample auto` budget. Changing either side alone fails here.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest
from cpu_data import recorded

from cniprof.analysis.record import TraceRecord
from cniprof.cli.commands import COMMANDS
from cniprof.probes.sampling import AUTO_TRACKED_PER_S, CALIBRATION_S, choose_sample_every
from cniprof.report.export import export_trace

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
DATA = Path(__file__).parent / "data"


def _columns(after: str) -> list[str]:
    """The backquoted column list the README gives right after `after`."""
    text = " ".join(README.split())
    m = re.search(rf"{re.escape(after)}.*?`([a-z0-9_]+(?:, [a-z0-9_]+)+)`", text)
    assert m, f"README names no columns after {after}"
    return [c.strip() for c in m.group(1).split(",")]


def _export(out: Path, cpu: bool) -> Path:
    """A recorded run with hops, netfilter and (with cpu) CPU data, written by the one export."""
    run = recorded()
    rec = TraceRecord("flannel", "vxlan", "cross-node", run["hops"], 4.0,
                      traffic={"tool": "iperf3", "throughput_bps": 9.1e9, "retransmits": 3},
                      sampling={"mode": "fixed", "every": 1}, cpu=run["cpu"] if cpu else None,
                      nf=json.loads((DATA / "recorded_nf_service_udp23.json").read_text()), kernel="6.18.0",
                      arch="x86_64")
    export_trace(out, rec)
    return out


def _header(path: Path) -> list[str]:
    return list(pd.read_csv(path, nrows=0).columns)


def test_usage_lists_every_command_and_no_other() -> None:
    usage = README[README.index("## Usage"):]
    usage = usage[usage.index("```sh") + 5:usage.index("```", usage.index("```sh") + 5)]
    named = set(re.findall(r"^cniprof ([a-z0-9]+)", usage, re.MULTILINE))
    assert named == set(COMMANDS)


def test_export_files_have_the_columns_the_readme_names(tmp_path: Path) -> None:
    plain, with_cpu = _export(tmp_path / "plain", cpu=False), _export(tmp_path / "cpu", cpu=True)
    assert _header(plain / "hops.csv") == _columns("`hops.csv`")
    assert _header(with_cpu / "hops.csv") == _columns("`hops.csv`") + _columns("hops.csv gains")
    assert _header(plain / "drops.csv") == _columns("`drops.csv`")
    assert _header(plain / "nf.csv") == _columns("`nf.csv`")


def test_sample_auto_budget_is_the_readmes() -> None:
    text = " ".join(README.split())
    m = re.search(r"`--sample auto`.*?under ([\d ,]+) packets/s", text)
    assert m, "README states no tracked-packet budget for --sample auto"
    assert float(re.sub(r"[ ,]", "", m.group(1))) == AUTO_TRACKED_PER_S
    m = re.search(r"`--sample auto`.*?from the first ([\d.]+) s", text)
    assert m and float(m.group(1)) == CALIBRATION_S


@pytest.mark.parametrize(("candidates", "seconds", "budget", "every"), [
    (0, 0.5, 8000, 1),             # nothing seen: track everything
    (100, 0.0, 8000, 1),           # no time measured: track everything
    (4000, 0.5, 8000, 1),          # exactly the budget
    (4001, 0.5, 8000, 2),          # one over: every other packet
    (400_000, 0.5, 8000, 100),     # 800 000/s
    (399_999, 0.5, 8000, 100),
    (1_000_000, 2.0, 1000, 500),
    (7, 1.0, 2.5, 3),              # ceil(7 / 2.5)
])
def test_choose_sample_every_is_the_smallest_n_under_the_budget(candidates: int, seconds: float, budget: float,
                                                                  every: int) -> None:
    assert choose_sample_every(candidates, seconds, budget) == every
    if seconds > 0 and candidates > 0:
        assert candidates / seconds / every <= budget  # under the budget ...
        assert every == 1 or candidates / seconds / (every - 1) > budget  # ... and the smallest such N


def test_choose_sample_every_default_budget() -> None:
    assert choose_sample_every(int(AUTO_TRACKED_PER_S), 1.0) == 1
    assert choose_sample_every(int(AUTO_TRACKED_PER_S) + 1, 1.0) == 2
    assert choose_sample_every(10**6, 1.0) == math.ceil(10**6 / 8000)  # the README's 8 000
