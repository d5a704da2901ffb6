# SPDX-License-Identifier: Apache-2.0
"""The subcommands and their one-line summaries, and the argument parser every command uses.

`cniprof --help` lists the commands from this table without importing them (each pulls in pandas, BPF and
friends); only the command being run is imported and registers its flags. A usage error is one line naming the
problem and the command's --help, exit status 2, never argparse's multi-line usage dump.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

COMMANDS = {
    "trace": "per-hop latency of a CNI datapath under real traffic",
    "lab": "build, show or remove the embedded CNI lab (network namespaces)",
    "doctor": "check which BPF features this kernel allows and what is lost without the others (root)",
    "diff": "differential CPU flame graph and component changes between two runs",
    "run": "run a benchmark study from a scenario file",
    "report": "re-render a run directory: a trace export, a comparison, a study or a tune run",
    "advise": "ranked findings and tuning advice for a run directory",
    "tune": "measure a tuning's gain on the lab (paired before/after runs, 95 %% CI)",
    "k8s": "deploy or remove the cniprof agents on a Kubernetes cluster",
}
USAGE_EXIT = 2
NAME_MAX, PATH_MAX = 255, 4096  # Linux


LEAF = "cli_parser"  # the namespace attribute naming the innermost (sub)command's parser


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `cniprof trace: argument --duration: ... (see cniprof trace --help)`.

    Each parser records itself in the namespace unless a subcommand's parser did first, so an error found
    after parsing (an unrecognized flag, a missing action) names the innermost command and its --help."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(USAGE_EXIT)

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        ns, extras = super().parse_known_args(args, namespace)
        if getattr(ns, LEAF, None) is None:
            setattr(ns, LEAF, self)
        return ns, extras


def leaf(args: argparse.Namespace, default: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The parser of the innermost command that parsed `args` (for one-line usage errors)."""
    found = getattr(args, LEAF, None)
    return found if isinstance(found, argparse.ArgumentParser) else default


def need_choice(parser: argparse.ArgumentParser, what: str, choices: Sequence[str]) -> NoReturn:
    """`cniprof lab` without an action: one line naming the choices, exit status 2."""
    parser.error(f"name {what}: {', '.join(choices)}")


def finite(text: str) -> float:
    """argparse type of a number that must be finite (nan and inf are refused in one line)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, not {text!r}")
    return value


def path(text: str) -> Path:
    """argparse type of a file or directory name: one that no system call could take is refused here (a name
    over NAME_MAX bytes, a path over PATH_MAX, an empty one), before anything asks the file system about it."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path")
    if len(os.fsencode(text)) >= PATH_MAX or any(len(os.fsencode(p)) > NAME_MAX for p in text.split("/")):
        raise argparse.ArgumentTypeError(f"path too long (a name over {NAME_MAX} bytes or a path over "
                                         f"{PATH_MAX}): {text[:60]}...")
    return Path(text)


def bounded(kind: type, low: float, high: float, unit: str = "") -> Any:
    """argparse type of a number in [low, high]: `--top 0` is one line naming the range."""
    def parse(text: str) -> Any:
        value = finite(text) if kind is float else _integer(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low:g}..{high:g}{unit}, not {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def add(sub: argparse._SubParsersAction, name: str, description: str | None) -> argparse.ArgumentParser:
    """The parser of subcommand `name`, with its summary from COMMANDS and its module docstring as description."""
    return sub.add_parser(name, help=COMMANDS[name], description=description,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
