# SPDX-License-Identifier: Apache-2.0
"""Every bad input of the reliability pass (issue 11), as plain tests of the real command in a subprocess:
exactly one line on stderr and exit 2 (usage) or 3 (environment), no traceback, no hang, nothing written.

The tests that need root (to get past the root check to the check under test) skip without it; none of them
builds a lab: each input is refused before that, and the lab id of this module is its own, so a regression that
did build one would not touch anyone else's (and is caught by the namespace check at the end of those tests).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import time
from pathlib import Path

import cli_contract
import pandas as pd
import pytest
import run_files
from cli_contract import check, in_process, run

import cniprof
from cniprof.interrupts import Terminated

LAB = f"bad{os.getpid()}"  # letters and digits: this module's own lab id
ENV = {"CNIPROF_LAB_ID": LAB}
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to get past the root check")
SCENARIO = "version: 1\nname: {name}\nmodels: [flannel]\nduration_s: 1\nrepetitions: 1\n" \
           "generators: [{{name: tcp, tool: iperf3}}]\n"


def lab_namespaces() -> list[str]:
    return sorted(p.name for p in Path("/run/netns").glob(f"cniprof_{LAB}-*")) if Path("/run/netns").is_dir() \
        else []


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_files.trace_export(tmp_path_factory.mktemp("export") / "run")


@pytest.fixture
def copy(export: Path, tmp_path: Path) -> Path:
    """A copy of the export this test may spoil."""
    return Path(shutil.copytree(export, tmp_path / "run"))


# ------------------------------------------------------------------ command lines refused before any work


@pytest.mark.parametrize(("argv", "says"), [
    ([], "cniprof: name a command: trace, lab,"),
    (["lab"], "cniprof lab: name an action: up, inject, down, status, explore (see cniprof lab --help)"),
    (["k8s"], "(see cniprof k8s --help)"),
    (["trace", "--duration", "nan"], "cniprof trace: argument --duration: must be a finite number, not 'nan'"),
    (["trace", "--duration", "-inf"], "argument --duration"),
    (["trace", "--duration", "1e9"], "--duration must be a number of seconds above 0 and at most 86400"),
    (["trace", "--duration", "0"], "--duration must be a number of seconds above 0"),
    (["trace", "--traffic", "udp", "--count", "1000000000", "--duration", "2"], "longer than --duration 2"),
    (["trace", "--traffic", "ping", "--count", "1000000000"], "longer than a run may last"),
    (["trace", "--count", "0"], "argument --count: must be 1..1e+09, not 0"),
    (["trace", "--sample", "-3"], "--sample takes a positive integer or auto"),
    (["trace", "--cni", "auto", "--root", "/nonexistent"], "--root /nonexistent: no such directory"),
    (["trace", "--bogus"], "cniprof trace: unrecognized arguments: --bogus (see cniprof trace --help)"),
    (["lab", "up", "--bogus"], "cniprof lab up: unrecognized arguments: --bogus (see cniprof lab up --help)"),
    (["lab", "up", "--cni", "nope"], "unsupported CNI 'nope'"),
    (["lab", "explore", "--count", "-1"], "argument --count: must be 1..10000"),
    (["diff", "--top", "0", "a", "b"], "cniprof diff: argument --top: must be 1..10000, not 0"),
    (["tune", "--try", "offloads-on", "--pairs", "0"], "argument --pairs: must be 1..100"),
    (["tune", "--try", "offloads-on", "--duration", "nan"], "argument --duration: must be a finite number"),
    (["run", "x.yaml", "--repetitions", "1000"], "argument --repetitions: must be 1..100"),
    (["run", "x.yaml", "--duration", "inf"], "argument --duration"),
    (["report", "x" * 300], "argument RUN_DIR: path too long"),
    (["k8s", "manifest", "--bogus"], "cniprof k8s manifest: unrecognized arguments: --bogus"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_refused_in_one_line(argv: list[str], says: str) -> None:
    t0 = time.monotonic()
    o = run(*argv, env=ENV)
    check(o, rc=2, says=says)
    assert time.monotonic() - t0 < cli_contract.LIMIT_S
    assert lab_namespaces() == []


def test_help_and_version_need_no_command() -> None:
    for argv in (["--help"], ["--version"]):
        o = run(*argv)
        assert o.rc == 0 and o.stderr == "" and o.stdout.startswith(("usage: cniprof", "cniprof ")), str(o)


COMMANDS = cli_contract.commands()


@pytest.mark.parametrize("words", [w for w, _ in COMMANDS], ids=[" ".join(w) or "cniprof" for w, _ in COMMANDS])
def test_short_help_and_version_of_every_command(words: list[str]) -> None:
    """-h is --help, and every command and action prints the version (README, Usage)."""
    long, short = in_process([*words, "--help"]), in_process([*words, "-h"])
    assert (short.rc, short.stderr, short.stdout) == (0, "", long.stdout), str(short)
    version = in_process([*words, "--version"])
    assert (version.rc, version.stderr, version.stdout) == (0, "", f"cniprof {cniprof.__version__}\n"), str(version)


def _required(parser: object) -> bool:
    """The command needs an argument: a positional one, or one of a required group of flags."""
    import argparse

    assert isinstance(parser, argparse.ArgumentParser)
    positional = any(not a.option_strings and a.nargs not in ("?", "*") and not isinstance(
        a, argparse._SubParsersAction) for a in parser._actions)
    return positional or any(g.required for g in parser._mutually_exclusive_groups)


NEED_ARGUMENTS = [w for w, p in COMMANDS if w and _required(p)]


def test_commands_needing_arguments_are_known() -> None:
    """The list below is what the parser says; a command that starts needing an argument shows up here."""
    assert [" ".join(w) for w in NEED_ARGUMENTS] == ["lab inject", "diff", "run", "report", "advise", "tune",
                                                    "k8s pod-netns"]


@pytest.mark.parametrize("words", NEED_ARGUMENTS, ids=[" ".join(w) for w in NEED_ARGUMENTS])
def test_no_arguments_is_one_line_naming_the_help(words: list[str]) -> None:
    """The installed command, with nothing after the command's name: one line that names its --help, exit 2."""
    o = run(*words, env=ENV)
    check(o, rc=2, says=f"(see cniprof {' '.join(words)} --help)")
    assert "required" in o.stderr, str(o)


# ------------------------------------------------------------------ outputs that cannot be written


def _unwritable(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "a-file").write_text("x")
    return {"under /proc": Path("/proc/cniprof-out"), "an existing file": tmp_path / "a-file",
            "below a file": tmp_path / "a-file" / "out"}


@pytest.mark.parametrize("where", ["under /proc", "an existing file", "below a file"])
@pytest.mark.parametrize("command", ["report", "advise", "diff"])
def test_unwritable_output_of_file_commands(command: str, where: str, export: Path, tmp_path: Path) -> None:
    out = _unwritable(tmp_path)[where]
    argv = {"report": ["report", str(export), "--output", str(out)],
            "advise": ["advise", str(export), "--output", str(out)],
            "diff": ["diff", str(export), str(export), "--out", str(out / "d.svg")]}[command]
    before = cli_contract.tree_state(export)
    o = run(*argv)
    check(o, rc=2, says="cannot write to")
    assert cli_contract.changed(before, cli_contract.tree_state(export)) == set()


@root_only
@pytest.mark.parametrize("where", ["under /proc", "an existing file", "below a file"])
@pytest.mark.parametrize("command", ["trace", "run", "tune"])
def test_unwritable_output_is_refused_before_any_lab(command: str, where: str, tmp_path: Path) -> None:
    out = _unwritable(tmp_path)[where]
    scenario = tmp_path / "s.yaml"
    scenario.write_text(SCENARIO.format(name="s"))
    argv = {"trace": ["trace", "--no-ui", "--export", str(out)],
            "run": ["run", str(scenario), "--output", str(out)],
            "tune": ["tune", "--try", "offloads-on", "--output", str(out)]}[command]
    o = run(*argv, env=ENV)
    check(o, rc=2, says="cannot write to")
    assert lab_namespaces() == []


# ------------------------------------------------------------------ run files that are not what cniprof wrote


def _spoil_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    data = change(data)
    path.write_text(json.dumps(data, allow_nan=True))


JSON_SPOILS = {
    "summary.json is a list": ("summary.json", lambda d: [d]),
    "snapshot.json is a string": ("snapshot.json", lambda d: "hops"),
    "NaN in summary.json": ("summary.json", lambda d: {**d, "end_to_end": {**d["end_to_end"], "mean_us": float("nan")}}),
    "Infinity in snapshot.json": ("snapshot.json", lambda d: {**d, "counters": {**d["counters"], "lost": float("inf")}}),
    "a hop count of 1e30": ("snapshot.json", lambda d: {**d, "hops": [{**d["hops"][0], "count": 10**30}, *d["hops"][1:]]}),
    "a hop without its points": ("snapshot.json", lambda d: {**d, "hops": [{**d["hops"][0], "to": 999}]}),
    "a bucket index out of range": ("snapshot.json", lambda d: {**d, "e2e": [{**d["e2e"][0], "buckets": {"900": 1}}]}),
    "a CPU sample of the wrong type": ("cpu.json", lambda d: {**d, "samples": [1, 2]}),
    "a CPU sample naming no stack": ("cpu.json", lambda d: {**d, "samples": [{**d["samples"][0], "kstack": 10**6}]}),
    "node state with a string for devices": ("nodestate.json", lambda d: {**d, "namespaces": [{"devices": "eth0"}]}),
    "a netfilter hook count of -1": ("nf.json", lambda d: {**d, "hooks": [{**d["hooks"][0], "count": -1}]}),
}


def test_nan_in_a_run_file(copy: Path, tmp_path: Path) -> None:
    """The real command on a run file holding NaN: refused in one line, never printed as `mean_us = nan`."""
    _spoil_json(copy / "summary.json", JSON_SPOILS["NaN in summary.json"][1])
    for command in ("report", "advise"):
        o = run(command, str(copy), "--output", str(tmp_path / command))
        check(o, rc=2, says="summary.json: not valid JSON (NaN is not a JSON number)")
        assert not (tmp_path / command).exists()


@pytest.mark.parametrize("spoil", JSON_SPOILS)
@pytest.mark.parametrize("command", ["report", "advise"])
def test_spoiled_json_run_files(command: str, spoil: str, copy: Path, tmp_path: Path) -> None:
    name, change = JSON_SPOILS[spoil]
    _spoil_json(copy / name, change)
    before = cli_contract.tree_state(copy)
    o = in_process([command, str(copy), "--output", str(tmp_path / "out")])  # as test_nan_in_a_run_file shows
    if command == "advise" and name in ("snapshot.json", "nf.json"):  # advise reads the tables, not these
        check(o)
    else:
        check(o, rc=2, says=name)
        assert not (tmp_path / "out").exists()
    assert cli_contract.changed(before, cli_contract.tree_state(copy)) == set()


CSV_SPOILS = {
    "hops.csv without packets": ("hops.csv", lambda t: t.drop(columns=["packets"])),
    "a negative packet count": ("hops.csv", lambda t: t.assign(packets=-t["packets"])),
    "nan where packets were seen": ("hops.csv", lambda t: t.assign(mean_us="nan")),
    "inf in a latency": ("hops.csv", lambda t: t.assign(p99_us="inf")),
    "words in drop counts": ("drops.csv", lambda t: pd.DataFrame({**{c: ["x"] for c in t.columns}})),
    "nf.csv with a fractional count": ("nf.csv", lambda t: t.assign(packets=1.5)),
}


@pytest.mark.parametrize("spoil", CSV_SPOILS)
def test_spoiled_csv_run_files(spoil: str, copy: Path, tmp_path: Path) -> None:
    name, change = CSV_SPOILS[spoil]
    change(pd.read_csv(copy / name)).to_csv(copy / name, index=False)
    o = in_process(["advise", str(copy), "--output", str(tmp_path / "out")])
    check(o, rc=2, says=name)
    assert "nan" not in o.stdout.split()


@pytest.mark.parametrize(("content", "says"), [
    ("a;b;c -5\n", "the sample count '-5' is not a whole number"),
    ("a;b;c 1.5\n", "is not a whole number"),
    ("a;b;c inf\n", "is not a whole number"),
    ("no counts here\n", "has no folded stack lines"),
    ("", "has no folded stack lines"),
])
def test_folded_files_with_bad_counts(content: str, says: str, export: Path, tmp_path: Path) -> None:
    folded = tmp_path / "bad.folded"
    folded.write_text(content)
    o = in_process(["diff", str(export), str(folded), "--out", str(tmp_path / "d.svg")])
    check(o, rc=2, says=says)
    assert not (tmp_path / "d.svg").exists()


def test_diff_of_a_cpu_json_of_the_wrong_type(export: Path, tmp_path: Path) -> None:
    bad = tmp_path / "cpu.json"
    bad.write_text('{"samples": {"a": 1}, "stacks": []}')
    check(run("diff", str(bad), str(export), "--out", str(tmp_path / "d.svg")), rc=2, says="samples")


def test_a_good_export_still_reads(export: Path, tmp_path: Path) -> None:
    """The checks refuse what cniprof did not write, and nothing it did: report, advise and diff all pass."""
    check(run("report", str(export), "--output", str(tmp_path / "r")), rc=0)
    check(run("advise", str(export), "--output", str(tmp_path / "a")), rc=0)
    check(run("diff", str(export), str(export / "cpu.folded"), "--out", str(tmp_path / "d.svg")), rc=0)
    assert (tmp_path / "r" / "hops-flame.svg").is_file() and (tmp_path / "d.svg").is_file()


def test_study_with_a_broken_results_table(tmp_path: Path) -> None:
    study = run_files.study_dir(tmp_path / "study")
    (study / "results.csv").write_text("run_id,model\nx,y\n")
    check(run("report", str(study), "--output", str(tmp_path / "out")), rc=2, says="results.csv: no column")
    check(run("advise", str(study), "--output", str(tmp_path / "out")), rc=2, says="results.csv: no column")


# ------------------------------------------------------------------ scenario files


@pytest.mark.parametrize(("name", "says"), [
    ("/tmp/x", "name: must be a name of letters"),
    ("../../escape", "name: must be a name of letters"),
    (".hidden", "name: must be a name of letters"),
])
def test_scenario_names_that_are_not_directory_names(name: str, says: str, tmp_path: Path) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text(SCENARIO.format(name=name))
    check(run("run", str(scenario), "--check", cwd=tmp_path), rc=2, says=says)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


def test_duplicate_variant_names(tmp_path: Path) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text(SCENARIO.format(name="s") + "variants: [{name: a}, {name: b}, {name: a}]\n")
    check(run("run", str(scenario), "--check"), rc=2, says="variants[2].name: 'a' is used by another variant")


def _limited_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # 1 GiB: a bomb that expanded would hit it


BOMB = "".join(f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8))


@pytest.mark.parametrize(("body", "says"), [
    ("description: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper than 32 levels"),
    ("description:\n" + "".join("  " * i + "-\n" for i in range(1, 400)), "nested deeper than 32 levels"),
    ('a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n' + BOMB + "description: *i\n",
     "expands to more than 100000 values"),
    ("description: &c [*c]\n", "nested deeper than 32 levels"),
    ("description: " + "x" * 300_000 + "\n", "larger than 256 KiB"),
], ids=["5000 deep", "400 deep block lists", "alias bomb", "alias inside itself", "300 kB"])
def test_hostile_yaml_is_refused_in_bounded_time_and_memory(body: str, says: str, tmp_path: Path) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text(SCENARIO.format(name="s") + body)
    t0 = time.monotonic()
    o = run("run", str(scenario), "--check", preexec_fn=_limited_memory)
    check(o, rc=2, says=says)
    assert time.monotonic() - t0 < cli_contract.LIMIT_S


@pytest.mark.parametrize("target", ["/dev/zero", "/proc/self", "dir"])
def test_scenario_that_is_not_a_regular_file(target: str, tmp_path: Path) -> None:
    path = str(tmp_path) if target == "dir" else target
    check(run("run", path, "--check", preexec_fn=_limited_memory), rc=2, says="not a regular file")


# ------------------------------------------------------------------ the environment


@root_only
def test_lab_commands_without_a_lab() -> None:
    check(run("lab", "inject", "offloads-off", env=ENV), rc=3, says="no lab is up")
    check(run("lab", "status", env=ENV), rc=3, says="no lab is up")
    check(run("lab", "explore", env=ENV), rc=3, says="no lab is up")


@root_only
@pytest.mark.parametrize("content", ["[1", "[]", '{"cni": "flannel", "mode": "vxlan", "nodes": ["x"], "pods": []}',
                                     "\udcff"], ids=["truncated", "a list", "a node of the wrong type", "not UTF-8"])
def test_lab_status_with_a_corrupt_state_file(content: str) -> None:
    from cniprof.lab.saved import STATE_DIR
    state = STATE_DIR / f"lab-{LAB}.json"
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    state.write_bytes(content.encode("utf-8", "surrogateescape"))
    try:
        for argv in (["lab", "status"], ["lab", "inject", "offloads-off"]):
            check(run(*argv, env=ENV), rc=3, says=f"{state} is unreadable")
    finally:
        state.unlink(missing_ok=True)


@root_only
@pytest.mark.parametrize(("tool", "argv"), [
    ("iperf3", ["run", "{scenario}"]),
    ("iperf3", ["trace", "--no-ui"]),
    ("sockperf", ["tune", "--try", "offloads-on", "--generator", "sockperf"]),
])
def test_missing_generator_programs_are_found_before_any_lab(tool: str, argv: list[str], tmp_path: Path) -> None:
    """No iperf3/sockperf on PATH: one line naming the tool, before a lab is built (not one failure per run)."""
    scenario = tmp_path / "s.yaml"
    scenario.write_text(SCENARIO.format(name="s"))
    path = tmp_path / "bin"  # everything on PATH except the tool
    path.mkdir()
    for d in os.environ["PATH"].split(os.pathsep):
        for exe in Path(d).glob("*") if Path(d).is_dir() else ():
            if exe.name != tool and not (path / exe.name).exists() and os.access(exe, os.X_OK):
                (path / exe.name).symlink_to(exe)
    o = run(*[a.format(scenario=scenario) for a in argv], "--output" if argv[0] in ("run", "tune") else "--no-ui",
            *([str(tmp_path / "out")] if argv[0] in ("run", "tune") else []),
            env={**ENV, "PATH": str(path)})
    check(o, rc=3, says=f"{tool} not found: install the Debian package {tool}")
    assert lab_namespaces() == []


# ------------------------------------------------------------------ a bug is still one line


def test_a_bug_is_one_internal_error_line_and_the_traceback_with_v(monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path) -> None:
    from cniprof.cli import diff

    def broken(args: object) -> int:
        raise TypeError("unsupported operand\nsecond line")

    monkeypatch.setattr(diff, "run", broken)
    quiet = in_process(["diff", "a", "b"])
    assert quiet.rc == 1
    assert quiet.stderr == ("cniprof: internal error: TypeError: unsupported operand second line (a bug; "
                            "`cniprof -v ...` shows where)\n")
    loud = in_process(["-v", "diff", "a", "b"])
    assert loud.rc == 1 and "Traceback" in loud.stderr and loud.stderr.endswith(quiet.stderr)


@pytest.mark.parametrize(("interrupt", "rc", "what"), [(KeyboardInterrupt(), 130, "interrupted"),
                                                      (Terminated(), 143, "terminated")])
def test_an_interrupt_turned_into_another_error_is_still_an_interrupt(monkeypatch: pytest.MonkeyPatch,
                                                                      interrupt: KeyboardInterrupt, rc: int,
                                                                      what: str) -> None:
    """numpy's first import re-raises a Ctrl-C landing inside it as ImportError; a cleanup may fail while the
    interrupt unwinds the run: the exit status is the interrupt's, the one line says what happened."""
    from cniprof.cli import diff

    def interrupted_import(args: object) -> int:
        try:
            raise interrupt
        except KeyboardInterrupt as e:
            raise ImportError("numpy failed to import") from e

    monkeypatch.setattr(diff, "run", interrupted_import)
    o = in_process(["diff", "a", "b"])
    assert o.rc == rc
    assert o.stderr == (f"cniprof: {what}; while stopping: ImportError: numpy failed to import "
                        "(`cniprof -v ...` shows where)\n")
