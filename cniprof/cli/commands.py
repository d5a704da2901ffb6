# SPDX-License-Identifier: Apache-2.0
"""The subcommands and their one-line summaries, and the argument parser every command uses.

`cniprof --help` lists the commands from this table without importing them (each pulls in pandas, BPF and
friends); only the command being run is imported and registers its flags. A usage error is one line naming the
problem and the command's --help, exit status 2, never argparse's multi-line usage dump.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

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
    "agent": "one node's half of a cross-node trace, driven through stdin/stdout (JSON lines; root)",
}
USAGE_EXIT = 2


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `cniprof trace: argument --duration: ... (see cniprof trace --help)`."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(USAGE_EXIT)


def add(sub: argparse._SubParsersAction, name: str, description: str | None) -> argparse.ArgumentParser:
    """The parser of subcommand `name`, with its summary from COMMANDS and its module docstring as description."""
    return sub.add_parser(name, help=COMMANDS[name], description=description,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
