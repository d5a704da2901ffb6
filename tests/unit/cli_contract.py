# SPDX-License-Identifier: Apache-2.0
"""The bad-input contract every cniprof command keeps, and two ways to check it: the installed command in a
subprocess (what a user sees: exit status, stderr) and `cniprof.cli.main.main` in-process (the same code path,
fast enough for thousands of generated inputs).

Contract: exit 0 (the input was fine), or 2 (usage) / 3 (environment) with exactly one line on stderr starting
with `cniprof`; never a traceback, never an `internal error`, never more than LIMIT_S seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CNIPROF = [sys.executable, "-m", "cniprof"]
LIMIT_S = 60.0  # a subprocess that takes longer hangs (imports alone take ~1 s; a busy machine stretches it)
IN_PROCESS_LIMIT_S = 30


@dataclass
class Outcome:
    argv: list[str]
    rc: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"cniprof {' '.join(self.argv)} -> rc {self.rc}\nstderr:\n{self.stderr}\nstdout (end):\n{self.stdout[-500:]}"


def check(o: Outcome, rc: int | tuple[int, ...] | None = None, says: str | None = None) -> None:
    """The contract, and optionally the exact exit status and a phrase the one line must hold."""
    assert "Traceback" not in o.stderr and "internal error" not in o.stderr, str(o)
    if rc is not None:
        assert o.rc in ((rc,) if isinstance(rc, int) else rc), str(o)
    if o.rc != 0:
        assert o.rc in (2, 3), str(o)
        lines = o.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("cniprof"), str(o)
    if says is not None:
        assert says in o.stderr, str(o)


def run(*argv: str, env: dict[str, str] | None = None, cwd: Path | None = None,
        timeout: float = LIMIT_S, **kw: object) -> Outcome:
    """The real command in a subprocess (stdin closed)."""
    full_env = {**os.environ, **(env or {})}
    p = subprocess.run([*CNIPROF, *argv], check=False, capture_output=True, text=True, timeout=timeout, env=full_env,
                       cwd=cwd, stdin=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]
    return Outcome(list(argv), p.returncode, p.stdout, p.stderr)


class Hang(Exception):
    pass


@contextlib.contextmanager
def _deadline(seconds: int) -> Iterator[None]:
    def fire(signum: int, frame: object) -> None:
        raise Hang(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def in_process(argv: list[str], cwd: Path | None = None, limit: int = IN_PROCESS_LIMIT_S) -> Outcome:
    """cli.main.main(argv) with stdout/stderr captured (logging included, as the command line would show it)."""
    from cniprof.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    saved_handlers, saved_level = logging.root.handlers[:], logging.root.level
    logging.root.handlers = []  # so main's logging.basicConfig writes to the captured stderr, as it would
    old_cwd = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with _deadline(limit), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(list(argv))
            except SystemExit as e:  # argparse: --help (0) and usage errors (2)
                rc = e.code if isinstance(e.code, int) else 1
    finally:
        os.chdir(old_cwd)
        logging.root.handlers, logging.root.level = saved_handlers, saved_level
    return Outcome(list(argv), rc, out.getvalue(), err.getvalue())


def commands() -> list[tuple[list[str], argparse.ArgumentParser]]:
    """Every command and sub-action as (words, parser): ([], cniprof), (["lab"], ...), (["lab", "up"], ...)."""
    from cniprof.cli.main import build_parser

    found: list[tuple[list[str], argparse.ArgumentParser]] = []

    def walk(words: list[str], parser: argparse.ArgumentParser) -> None:
        found.append((words, parser))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    walk([*words, name], child)

    walk([], build_parser(None))
    return found


def tree_state(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under root with its size and mtime, every directory: what a command wrote shows as a
    difference (a directory's own mtime, which any file written in it changes, is left out)."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs:
            out[str((Path(dirpath) / name).relative_to(root))] = (0, 0)
        for name in files:
            p = Path(dirpath) / name
            try:
                st = p.lstat()
            except FileNotFoundError:
                continue
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def changed(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> set[str]:
    return {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
