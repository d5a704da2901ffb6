# SPDX-License-Identifier: Apache-2.0
"""Ctrl-C or SIGTERM in the middle of netlink requests: one line on stderr and nothing else.

pyroute2 runs each request in an asyncio event loop of its own; an interrupt raised inside it used to leave a
pending task, a coroutine never awaited or a half-closed async generator that Python reported on stderr after
cniprof's one line (a CI run: "Task was destroyed but it is pending!" after a Ctrl-C during the lab build, about
1 run in 20). Here a child loops over the helpers every netlink user goes through (the lab's nsutil.ipr in a
namespace of this session's own, the node agent's livenode.netlink in its own namespace) and is signalled at
random moments; without interrupts.deferred() around them 1-6 runs in 24 printed more than the line or ended
on an uncaught error from inside the event loop.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import textwrap
import time

import owned
import pytest
from pyroute2 import netns

pytestmark = pytest.mark.root

CHILD = textwrap.dedent("""
    import sys
    from cniprof.cli.main import main  # noqa: F401  (its logging set-up and imports, as in a real run)
    import logging
    from cniprof import interrupts
    from cniprof.lab import nsutil
    from cniprof.node import livenode

    logging.basicConfig(format="%(levelname)s %(message)s")
    helper, ns = sys.argv[1], sys.argv[2]
    try:
        with interrupts.sigterm_interrupts():
            print("ready", flush=True)
            while True:
                with (nsutil.ipr(ns) if helper == "lab" else livenode.netlink(None)) as sock:
                    for _ in range(10):  # mostly requests, with an open and a close now and then
                        sock.link_lookup(ifname="lo")
                        sock.get_links()
    except KeyboardInterrupt as e:
        print("interrupted", file=sys.stderr)
        sys.exit(interrupts.exit_status(e))
""")
RUNS = 24


@pytest.fixture
def namespace():
    name = owned.netns_name("netlink-interrupts")
    netns.create(name)
    try:
        yield name
    finally:
        netns.remove(name)


@pytest.mark.parametrize("helper", ["lab", "node"])
def test_an_interrupted_netlink_request_prints_nothing_more(namespace: str, helper: str) -> None:
    rng = random.Random(16)
    noisy = []
    for _ in range(RUNS):
        signum, delay = rng.choice([signal.SIGINT, signal.SIGTERM]), rng.uniform(0.05, 0.3)
        proc = subprocess.Popen([sys.executable, "-c", CHILD, helper, namespace], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

        def looping(proc: subprocess.Popen[str] = proc, delay: float = delay) -> bool:
            """It printed "ready" and has been looping over the requests for `delay`."""
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
            time.sleep(delay)
            return True

        err, _, _ = owned.signal_when(proc, looping, "the child's netlink loop", signum, timeout_s=30)
        assert proc.returncode == 128 + signum, err
        if err != "interrupted\n":
            noisy.append(err)
    assert not noisy, f"{len(noisy)} of {RUNS} runs printed more than one line; the first:\n{noisy[0]}"
