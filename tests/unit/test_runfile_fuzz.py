# SPDX-License-Identifier: Apache-2.0
"""Generated run files and scenario files: whatever a file holds, `report`, `advise`, `diff` and `run --check`
answer within the contract (exit 0, or 2 with one line naming the file; never a traceback, never `nan` printed,
nothing written but the named output).

Run files start from a real export (recorded kernel data, tests/unit/run_files.py); hypothesis picks one file,
walks to any field (or CSV cell) and replaces it with a value of another type, a non-finite number, a huge or
negative one, or removes it. Scenario files start from a valid scenario and get the same treatment, or are
arbitrary text.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

import cli_contract
import pandas as pd
import pytest
import run_files
import yaml
from cli_contract import check, in_process
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cniprof.errors import UsageError
from cniprof.runfiles import HOPS_TABLE, check_table
from cniprof.study import scenario

EXAMPLES = int(os.environ.get("CNIPROF_FUZZ_EXAMPLES", "25"))  # per test: each re-renders a run (~0.3 s)
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
JSON_FILES = ["summary.json", "snapshot.json", "cpu.json", "nf.json", "nodestate.json"]
CSV_FILES = ["hops.csv", "drops.csv", "nf.csv"]
DELETE = object()
NAN_WORD = re.compile(r"\b(nan|inf)\b", re.IGNORECASE)

values = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1e308, -1e308, 2**53, 2**64, "", "x", "NaN", "1e400", [], {}, [None], {"id": 0}]),
    st.text(max_size=12), st.lists(st.integers(-5, 5), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(-5, 5), max_size=2), st.just(DELETE))


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_files.trace_export(tmp_path_factory.mktemp("good") / "run")


@st.composite
def spoiled_json(draw: st.DrawFn, data: Any) -> Any:
    """data with one value somewhere replaced (or removed), or the whole document replaced."""
    if draw(st.integers(0, 9)) == 0:
        new = draw(values)
        return {} if new is DELETE else new
    data = json.loads(json.dumps(data))
    node, key = None, None
    here = data
    for _ in range(draw(st.integers(1, 5))):
        if isinstance(here, dict) and here:
            k = draw(st.sampled_from(sorted(here)))
        elif isinstance(here, list) and here:
            k = draw(st.integers(0, len(here) - 1))
        else:
            break
        node, key, here = here, k, here[k]
    if node is None:
        return draw(values)
    new = draw(values)
    if new is DELETE:
        del node[key]
    else:
        node[key] = new
    return data


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, allow_nan=True))


def _contract(o: cli_contract.Outcome, run: Path, before: dict, out: Path) -> None:
    check(o)
    assert o.rc in (0, 2), str(o)
    if o.rc == 0:
        assert not NAN_WORD.search(o.stdout), f"a number printed as nan/inf\n{o}"
    changed = cli_contract.changed(before, cli_contract.tree_state(run.parent))
    assert all(p == out.name or p.startswith(out.name + "/") for p in changed), f"written: {changed}\n{o}"


@FUZZ
@given(data=st.data())
@pytest.mark.parametrize("command", ["report", "advise"])
def test_spoiled_json_run_files(command: str, export: Path, tmp_path_factory: pytest.TempPathFactory,
                                data: st.DataObject) -> None:
    work = tmp_path_factory.mktemp("spoiled")
    run = Path(shutil.copytree(export, work / "run"))
    name = data.draw(st.sampled_from(JSON_FILES), label="file")
    _write_json(run / name, data.draw(spoiled_json(json.loads((export / name).read_text())), label="content"))
    before = cli_contract.tree_state(work)
    o = in_process([command, str(run), "--output", str(work / "out")])
    _contract(o, run, before, work / "out")


@FUZZ
@given(data=st.data())
def test_spoiled_csv_run_files(export: Path, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    work = tmp_path_factory.mktemp("spoiled")
    run = Path(shutil.copytree(export, work / "run"))
    name = data.draw(st.sampled_from(CSV_FILES), label="file")
    table = pd.read_csv(export / name, dtype=str, keep_default_na=False)
    if data.draw(st.booleans(), label="drop a column") and len(table.columns):
        table = table.drop(columns=[data.draw(st.sampled_from(list(table.columns)), label="column")])
    elif len(table):
        row = data.draw(st.integers(0, len(table) - 1), label="row")
        col = data.draw(st.sampled_from(list(table.columns)), label="column")
        table.loc[row, col] = data.draw(st.sampled_from(["", "nan", "inf", "-1", "1.5", "1e30", "x", "True",
                                                         "-0", "1e400"]), label="cell")
    table.to_csv(run / name, index=False)
    before = cli_contract.tree_state(work)
    o = in_process(["advise", str(run), "--output", str(work / "out")])
    _contract(o, run, before, work / "out")


@FUZZ
@given(data=st.data())
def test_spoiled_cpu_profiles_for_diff(export: Path, tmp_path_factory: pytest.TempPathFactory,
                                      data: st.DataObject) -> None:
    work = tmp_path_factory.mktemp("spoiled")
    run = Path(shutil.copytree(export, work / "run"))
    if data.draw(st.booleans(), label="folded"):
        lines = (export / "cpu.folded").read_text().splitlines()[:20]
        i = data.draw(st.integers(0, len(lines) - 1), label="line")
        lines[i] = data.draw(st.one_of(st.text(max_size=30), st.builds(
            lambda head, n: f"{head} {n}", st.sampled_from(["a;b", "swapper;do_idle", ";", ""]),
            st.sampled_from(["-3", "nan", "inf", "1e30", "0", "2.5", "9" * 40]))), label="folded line")
        (run / "cpu.json").unlink()
        (run / "cpu.folded").write_text("\n".join(lines) + "\n")
    else:
        _write_json(run / "cpu.json", data.draw(spoiled_json(json.loads((export / "cpu.json").read_text()))))
    before = cli_contract.tree_state(work)
    o = in_process(["diff", str(run), str(export), "--out", str(work / "out" / "d.svg")])
    _contract(o, run, before, work / "out")


# ------------------------------------------------------------------ scenario files

BASE = {"version": 1, "name": "fuzz", "models": ["flannel"], "paths": ["cross-node"], "repetitions": 1,
        "duration_s": 2, "generators": [{"name": "tcp", "tool": "iperf3", "params": {"streams": 1}}],
        "variants": [{"name": "base", "tunings": {}}, {"name": "mtu", "tunings": {"mtu": 1400}}]}


def _accepted(scen: scenario.Scenario) -> None:
    """What an accepted scenario promises the runner: a directory-safe name, distinct names, sane numbers."""
    assert scenario.NAME.fullmatch(scen.name) and ".." not in scen.name.split("/")
    assert len({v.name for v in scen.variants}) == len(scen.variants)
    assert len({g.name for g in scen.generators}) == len(scen.generators)
    assert 1 <= scen.repetitions <= 100 and math.isfinite(scen.duration_s) and 1 <= scen.duration_s <= 600


def _loads_or_one_line(text: str) -> None:
    """A scenario text is either accepted (and then sane) or refused in one line naming the file."""
    try:
        scen = scenario.loads(text, "fuzz.yaml")
    except UsageError as e:
        assert str(e).startswith("fuzz.yaml") and "\n" not in str(e), str(e)
        return
    _accepted(scen)


@settings(max_examples=300, deadline=None, database=None)
@given(data=st.data())
def test_generated_scenarios(data: st.DataObject) -> None:
    doc = data.draw(spoiled_json(BASE), label="scenario")
    try:
        text = yaml.safe_dump(doc, allow_unicode=True)
    except (yaml.YAMLError, ValueError):
        return
    _loads_or_one_line(text)


@settings(max_examples=300, deadline=None, database=None)
@given(text=st.one_of(st.text(max_size=200), st.builds(
    lambda head, tail: head + tail, st.just(yaml.safe_dump(BASE)),
    st.text(alphabet="[]{}&*!|>:-,?'\"#%@ \n\ta1", max_size=80))))
def test_arbitrary_scenario_text(text: str) -> None:
    _loads_or_one_line(text)


@FUZZ
@given(data=st.data())
def test_generated_scenarios_through_the_command(tmp_path_factory: pytest.TempPathFactory,
                                                  data: st.DataObject) -> None:
    work = tmp_path_factory.mktemp("scenario")
    (work / "s.yaml").write_text(yaml.safe_dump(data.draw(spoiled_json(BASE), label="scenario")))
    before = cli_contract.tree_state(work)
    o = in_process(["run", str(work / "s.yaml"), "--check"], cwd=work)
    check(o)
    assert cli_contract.changed(before, cli_contract.tree_state(work)) == set(), str(o)


def test_a_hop_outside_the_chain_has_a_mean_and_no_percentiles() -> None:
    """The kernel keeps count and sum for a pair of points outside the chain, no histogram: its row in hops.csv
    has packets and a mean with empty percentiles, and is accepted; a hop of the chain with packets is not."""
    row = {"direction": "a -> b", "seq": 0, "hop": "x -> y", "role": "", "node": "node1", "device": "eth0",
           "from_point": "x", "to_point": "y", "packets": 943, "p50_us": math.nan, "p90_us": math.nan,
           "p99_us": math.nan, "mean_us": 3.5, "share_pct": math.nan, "expected": False, "in_e2e": False}
    checked = check_table(pd.DataFrame([row]), HOPS_TABLE, "hops.csv")
    assert checked["packets"].tolist() == [943] and math.isnan(checked["p50_us"].iloc[0])
    with pytest.raises(UsageError, match="row 2, column p50_us: an empty cell is not a number"):
        check_table(pd.DataFrame([{**row, "expected": True}]), HOPS_TABLE, "hops.csv")
    with pytest.raises(UsageError, match="column mean_us"):
        check_table(pd.DataFrame([{**row, "mean_us": math.nan}]), HOPS_TABLE, "hops.csv")
