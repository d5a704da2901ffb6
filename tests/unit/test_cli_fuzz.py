# SPDX-License-Identifier: Apache-2.0
"""Every command and sub-action, fed generated flags and values: `--help` always works, and whatever is typed
the answer keeps the contract (exit 0, or 2/3 with one line; no traceback, no hang, nothing written outside what
the command line names).

The commands are found by walking the real parser, so a new command or flag is fuzzed without editing this
file. Values come from a pool of what users get wrong (nan, inf, 1e400, negative counts, paths under /proc,
below a file, escaping with ../, an existing file where a directory is expected, unicode, very long) mixed with
each flag's valid choices. The generated command lines run in-process as a non-root user (os.geteuid patched),
so whatever passes validation stops at the root check instead of building a lab; the subprocess tests in
test_bad_inputs.py check the same contract on the real command.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import cli_contract
import pytest
from cli_contract import check, in_process
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

COMMANDS = cli_contract.commands()
NAMES = [" ".join(words) or "cniprof" for words, _ in COMMANDS]
# per command; ~20 commands: a few hundred command lines, about a minute (CNIPROF_FUZZ_EXAMPLES=500 for a soak)
EXAMPLES = int(os.environ.get("CNIPROF_FUZZ_EXAMPLES", "30"))

HOSTILE = ["", " ", "0", "-1", "1", "2", "nan", "NaN", "inf", "-inf", "1e9", "1e400", "-0", "0x10", "1.5", "abc",
           "..", "../../escape", "/proc/self/x", "/proc/x/y", "/sys/x", "/nonexistent/dir/x", "/dev/null",
           "/dev/zero", "-", "--", "a,b,,", "flannel:nope", "auto", "x" * 300, "pod-\u00e9", "\U0001f642",
           "$(id)", "%s%n%%", "\t", "NAME=1", "services=-1", "services=1e9"]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Paths the generated command lines point at: a file, a directory that holds no run, one with junk, cwd."""
    root = tmp_path_factory.mktemp("sandbox")
    (root / "file.txt").write_text("hello\n")
    (root / "empty").mkdir()
    junk = root / "junk"
    junk.mkdir()
    (junk / "summary.json").write_text("[1, 2")
    (junk / "snapshot.json").write_text("{}")
    (junk / "metadata.json").write_text("null")
    (junk / "tune.csv").write_text("a,b\n1\n")
    (junk / "cpu.folded").write_text("a;b -5\n")
    (root / "scenario.yaml").write_text("version: 1\nname: ../../x\nmodels: [flannel]\n"
                                        "generators: [{tool: ping}]\n")
    (root / "cwd").mkdir()
    return root


def _paths(root: Path) -> list[str]:
    return [str(root / p) for p in ("file.txt", "empty", "junk", "scenario.yaml", "missing", "file.txt/below",
                                     "junk/summary.json", "junk/cpu.folded", "empty/new/deeper")]


@contextlib.contextmanager
def not_root() -> Iterator[None]:
    """Whatever passes validation stops at the root check (nothing is built, loaded or attached)."""
    real = os.geteuid
    os.geteuid = lambda: 1000  # type: ignore[assignment]
    try:
        yield
    finally:
        os.geteuid = real  # type: ignore[assignment]


def _value(action: argparse.Action, pool: list[str]) -> st.SearchStrategy[str]:
    hostile = st.sampled_from(pool)
    if action.choices:
        return st.one_of(st.sampled_from([str(c) for c in action.choices]), hostile)
    return hostile


@st.composite
def command_lines(draw: st.DrawFn, words: list[str], parser: argparse.ArgumentParser,
                  pool: list[str]) -> list[str]:
    argv = list(words)
    flags = [a for a in parser._actions if a.option_strings and not isinstance(
        a, (argparse._HelpAction, argparse._VersionAction))]
    for action in draw(st.lists(st.sampled_from(flags), max_size=5)) if flags else []:
        argv.append(draw(st.sampled_from(action.option_strings)))
        if action.nargs != 0:
            n = {"+": draw(st.integers(1, 2)), "*": draw(st.integers(0, 2))}.get(str(action.nargs), 1)
            argv += [draw(_value(action, pool)) for _ in range(n)]
    for action in parser._actions:
        if action.option_strings or isinstance(action, argparse._SubParsersAction):
            continue
        n = {"+": draw(st.integers(1, 3)), "*": draw(st.integers(0, 2)), "?": draw(st.integers(0, 1))}.get(
            str(action.nargs), 1)
        argv += [draw(_value(action, pool)) for _ in range(n)]
    if draw(st.integers(0, 9)) == 0:
        argv.insert(draw(st.integers(len(words), len(argv))), draw(st.sampled_from(["--bogus", "-z", "extra"])))
    return argv


@pytest.mark.parametrize("words", [w for w, _ in COMMANDS], ids=NAMES)
def test_help_of_every_command_and_action(words: list[str]) -> None:
    o = in_process([*words, "--help"])
    assert o.rc == 0 and o.stderr == "", str(o)
    assert o.stdout.startswith("usage: cniprof") and len(o.stdout.splitlines()) > 2, str(o)


def test_help_of_the_installed_command_lists_every_command() -> None:
    o = cli_contract.run("--help")
    assert o.rc == 0 and o.stderr == "", str(o)
    for words, _ in COMMANDS:
        if len(words) == 1:
            assert f"    {words[0]} " in o.stdout, words


@pytest.mark.parametrize("command", [c for c in COMMANDS if c[0]], ids=NAMES[1:])
@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_generated_command_lines_keep_the_contract(command: tuple[list[str], argparse.ArgumentParser],
                                                    sandbox: Path, data: st.DataObject) -> None:
    words, parser = command
    argv = data.draw(command_lines(words, parser, HOSTILE + _paths(sandbox)), label="argv")
    before = cli_contract.tree_state(sandbox)
    with not_root():
        o = in_process(argv, cwd=sandbox / "cwd")
    check(o)
    named = {a for a in argv if a.startswith(str(sandbox))}
    if words and words[0] == "diff":
        named.add(str(sandbox / "cwd" / "cpu-diff.svg"))
    for path in cli_contract.changed(before, cli_contract.tree_state(sandbox)):
        full = str(sandbox / path)
        assert any(full == n or full.startswith(n.rstrip("/") + "/") for n in named), \
            f"{full} was written, but the command line did not name it\n{o}"
