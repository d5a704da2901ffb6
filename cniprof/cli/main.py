# SPDX-License-Identifier: Apache-2.0
"""Entry point: one module per subcommand (cli/<name>.py with `register(subparsers)` and `run(args)`).

Only this function maps the project's errors to exit codes and one-line messages; nothing else prints tracebacks.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from cniprof import __version__
from cniprof.errors import CniprofError

SUBCOMMANDS = ("trace", "lab", "doctor", "diff", "run", "report", "advise", "tune", "k8s", "agent")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cniprof", description="eBPF datapath profiler for container networking")
    parser.add_argument("--version", action="version", version=f"cniprof {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is done (to stderr)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"cniprof.cli.{name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        # inside the try: Ctrl-C while the subcommands' modules are still importing is an interrupt too
        parser = build_parser()
        args = parser.parse_args(argv)
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                            format="%(levelname)s %(message)s")
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return int(args.func(args) or 0)
    except CniprofError as e:
        print(f"cniprof: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("cniprof: interrupted; everything cniprof created was removed", file=sys.stderr)
        return 130
