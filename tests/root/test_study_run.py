# SPDX-License-Identifier: Apache-2.0
"""`cniprof run` for real on the session's flannel/vxlan lab: two short traced runs, then the run directory.

Uses the shared `lab` fixture (the study finds the lab up and leaves it up); the variant's tuning is applied and
reverted around each run. ~15 s.
"""

from __future__ import annotations

import json
import time

import pandas as pd
import psutil
import pytest

from cniprof.cli.main import main

pytestmark = [pytest.mark.root]

SCENARIO = """\
version: 1
name: root-test
models: [flannel:vxlan]
paths: [cross-node]
repetitions: 1
duration_s: 2
generators:
  - {name: rr-udp, tool: sockperf, params: {proto: udp}}
  - {name: web, tool: wrk, params: {body: 10KB}}
variants:
  - {name: short-queues, tunings: {txqueuelen: 500}}
"""


def test_run_study_on_the_lab(lab, tmp_path):
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    (tmp_path / "s.yaml").write_text(SCENARIO)
    out = tmp_path / "run"
    assert main(["run", str(tmp_path / "s.yaml"), "--output", str(out)]) == 0
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["status"] == "complete" and meta["environment"]["kernel"]
    results = pd.read_csv(out / "results.csv")
    primary = results[results["primary"]].set_index("generator")["value"]
    assert primary["rr-udp"] > 0 and primary["web"] > 0
    hops = pd.read_csv(out / "hops.csv")
    traced = hops[hops["in_e2e"] & hops["expected"]].groupby("generator")["packets"].sum()
    # a study traces under the default overhead budget (duty-cycled): a short run holds a window or two, and the
    # first may open before the generator's traffic does (a 1 s run once saw no rr-udp packet in CI)
    assert traced["rr-udp"] > 0 and traced["web"] > 0, "the probe saw the generators' traffic"
    for run in meta["runs"]:
        assert (out / "runs" / run["run_id"] / "snapshot.json").is_file()
        assert run["variant"] == "short-queues" and any("txqueuelen" in c for c in run["tuning_changes"])
    # the study's findings: one group (model, path, variant), its runs' nodestate read, no fault on a clean lab
    assert main(["advise", str(out)]) == 0
    found = json.loads((out / "findings.json").read_text())
    assert found["kind"] == "study" and found["faults"] == 0 and found["findings"]
    assert {(f["model"], f["path"], f["variant"]) for f in found["findings"]} == \
        {("flannel:vxlan", "cross-node", "short-queues")}
    assert all((out / "runs" / r["run_id"] / "nodestate.json").is_file() for r in meta["runs"])
    assert (out / "findings.png").stat().st_size > 0
    deadline = time.monotonic() + 2
    while {p.pid for p in psutil.Process().children(recursive=True)} - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert {p.pid for p in psutil.Process().children(recursive=True)} - before == set()
    assert main(["run", str(tmp_path / "s.yaml"), "--output", str(out)]) == 2  # never overwrites a study
