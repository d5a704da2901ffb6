# SPDX-License-Identifier: Apache-2.0
"""SIGTERM stops cniprof exactly as Ctrl-C does: the same cleanup, then exit status 143 instead of 130.

systemd, Kubernetes and `timeout` stop programs with SIGTERM. `sigterm_interrupts()` turns it into `Terminated`,
a KeyboardInterrupt, so every `except KeyboardInterrupt` and every ExitStack unwinds the same way for both
signals; cli.main maps Terminated to 143 and a plain KeyboardInterrupt to 130.

Only the first signal interrupts: while its cleanup runs (links destroyed, generators killed, a lab built by the
run removed, the tuning reverted), a second Ctrl-C or SIGTERM (an impatient user, a supervisor repeating
itself) is ignored rather than breaking off the cleanup halfway and leaving half a lab. SIGKILL still ends it.

pyroute2 forks helper processes to open sockets in other namespaces; they inherit the handlers and must not run
the parent's cleanup (which would tear down the lab under it), so a forked child just exits.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

SIGINT_EXIT = 128 + signal.SIGINT
SIGTERM_EXIT = 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived; unwinds like Ctrl-C."""


_depth = 0  # nesting of sigterm_interrupts() (cli.main, then trace.run inside it)
_stopping = False  # an interrupt was raised: its cleanup is running, later signals wait for it


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    global _depth, _stopping
    owner = os.getpid()

    def handler(signum: int, frame: object) -> None:
        global _stopping
        if os.getpid() != owner:
            os._exit(128 + signum)
        if _stopping:
            return
        _stopping = True
        raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    _depth += 1
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)
        _depth -= 1
        if _depth == 0:  # the outermost: the cleanup is over; a later run in this process starts afresh
            _stopping = False


def exit_status(interrupt: KeyboardInterrupt) -> int:
    return SIGTERM_EXIT if isinstance(interrupt, Terminated) else SIGINT_EXIT
