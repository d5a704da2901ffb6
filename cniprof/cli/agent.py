# SPDX-License-Identifier: Apache-2.0
"""cniprof agent: trace this node's half of cross-node paths for a coordinator (JSON lines on stdin/stdout).

Commands on stdin, replies on stdout, one JSON object per line; logs on stderr. No socket: whoever starts the agent
(`cniprof trace --agents per-node`, a pod exec) owns it. It stops, detaching every BPF program, when stdin closes,
on SIGTERM/SIGINT, or when its parent dies. Protocol: ARCHITECTURE.md, "Node agents".
"""

from __future__ import annotations

import argparse

from cniprof.cli import commands
from cniprof.run import agent


def register(sub: argparse._SubParsersAction) -> None:
    p = commands.add(sub, "agent", __doc__)
    p.add_argument("--node", help="this node's name in the run (default: the host name; a start spec's wins)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return agent.main(args.node)
