# SPDX-License-Identifier: Apache-2.0
"""Entry point: one module per subcommand (cli/<name>.py with `register(subparsers)` and `run(args)`).

Only this function maps the project's errors to exit codes and one-line messages; nothing else prints tracebacks.
Exit status: 0 done, 2 bad usage, 3 environment (root, kernel, tools, a lab), 130/143 interrupted (Ctrl-C/SIGTERM,
also when the interrupt turned into another error on its way out), 1 a run that failed, or a bug (one line
`internal error: ...`; `cniprof -v ...` adds the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from typing import Any

from cniprof.cli import commands
from cniprof.cli.commands import COMMANDS, Parser
from cniprof.errors import CniprofError
from cniprof.interrupts import Terminated, exit_status, interrupt_behind, sigterm_interrupts

log = logging.getLogger(__name__)

INTERNAL_EXIT = 1


def one_line(message: str) -> str:
    """A message as one line, whatever it held (a single-line message is unchanged)."""
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Every command is listed; only `command` (None: all of them) is imported and gets its flags."""
    parser = Parser(prog="cniprof", description="eBPF datapath profiler for container networking")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is done (to stderr)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name, summary in COMMANDS.items():
        if command is None or name == command:
            importlib.import_module(f"cniprof.cli.{name}").register(sub)
        else:
            sub.add_parser(name, help=summary)
    return parser


def _command(argv: list[str]) -> str | None:
    """The subcommand named on the command line, if any (the first word that is one)."""
    return next((a for a in argv if a in COMMANDS), None)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        # inside the try: Ctrl-C while the subcommands' modules are still importing is an interrupt too
        with sigterm_interrupts():
            return _main(argv)
    except CniprofError as e:
        print(f"cniprof: {one_line(str(e))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as interrupt:
        what = "terminated" if isinstance(interrupt, Terminated) else "interrupted"
        print(f"cniprof: {what}; everything cniprof created was removed", file=sys.stderr)
        # the run is over and said so: an object the signal caught half-built (pyroute2's asyncio loop during a
        # lab build) may fail in its finaliser at exit; that is logged (-v), not a second line on stderr
        sys.unraisablehook = _finaliser_after_interrupt
        return exit_status(interrupt)
    except Exception as e:  # noqa: BLE001 - a bug, not the user's doing: one line (traceback with -v)
        if "-v" in argv or "--verbose" in argv:
            traceback.print_exc()
        detail = one_line(str(e))[:200]
        interrupt = interrupt_behind(e)
        if interrupt is not None:  # the signal became another error on its way out: still an interrupt
            what = "terminated" if isinstance(interrupt, Terminated) else "interrupted"
            print(f"cniprof: {what}; while stopping: {type(e).__name__}: {detail} (`cniprof -v ...` shows where)",
                  file=sys.stderr)
            return exit_status(interrupt)
        print(f"cniprof: internal error: {type(e).__name__}: {detail} (a bug; `cniprof -v ...` shows where)",
              file=sys.stderr)
        return INTERNAL_EXIT


def _finaliser_after_interrupt(unraisable: Any) -> None:
    log.debug("after the interrupt: %s in %r: %s", type(unraisable.exc_value).__name__, unraisable.object,
              unraisable.exc_value)


def _main(argv: list[str]) -> int:
    parser = build_parser(_command(argv) or "")
    args, extra = parser.parse_known_args(argv)
    if extra:  # named by the innermost command: `cniprof lab up: unrecognized arguments: -x (see ... --help)`
        commands.leaf(args, parser).error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if not getattr(args, "func", None):
        commands.need_choice(parser, "a command", list(COMMANDS))
    return int(args.func(args) or 0)
