# SPDX-License-Identifier: Apache-2.0
"""SIGTERM stops cniprof exactly as Ctrl-C does: the same cleanup, then exit status 143 instead of 130.

systemd, Kubernetes and `timeout` stop programs with SIGTERM. `sigterm_interrupts()` turns it into `Terminated`,
a KeyboardInterrupt, so every `except KeyboardInterrupt` and every ExitStack unwinds the same way for both
signals; cli.main maps Terminated to 143 and a plain KeyboardInterrupt to 130.

pyroute2 forks helper processes to open sockets in other namespaces; they inherit the handler and must not run
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


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    owner = os.getpid()

    def handler(signum: int, frame: object) -> None:
        if os.getpid() != owner:
            os._exit(128 + signum)
        raise Terminated

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def exit_status(interrupt: KeyboardInterrupt) -> int:
    return SIGTERM_EXIT if isinstance(interrupt, Terminated) else SIGINT_EXIT
