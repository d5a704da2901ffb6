# SPDX-License-Identifier: Apache-2.0
"""SIGTERM stops cniprof exactly as Ctrl-C does: the same cleanup, then exit status 143 instead of 130.

systemd, Kubernetes and `timeout` stop programs with SIGTERM. `sigterm_interrupts()` turns it into `Terminated`,
a KeyboardInterrupt, so every `except KeyboardInterrupt` and every ExitStack unwinds the same way for both
signals; cli.main maps Terminated to 143 and a plain KeyboardInterrupt to 130.

Only the first signal interrupts: while its cleanup runs (links destroyed, generators killed, a lab built by the
run removed, the tuning reverted), a second Ctrl-C or SIGTERM (an impatient user, a supervisor repeating
itself) is ignored rather than breaking off the cleanup halfway and leaving half a lab. SIGKILL still ends it.

An exception raised by a signal handler is lost when the signal lands where Python drops exceptions: an
os.fork() hook (pyroute2 forks for every namespace; logging releases its lock after each fork), a __del__, a
weakref callback. Python reports those through sys.unraisablehook; ours recognises the interrupt there and
sends the signal again a millisecond later, until it lands where it unwinds the run (found by the signal suite:
a Ctrl-C during `lab up` was lost this way and the lab was built anyway).

pyroute2 forks helper processes to open sockets in other namespaces; they inherit the handlers and must not run
the parent's cleanup (which would tear down the lab under it), so a forked child just exits.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

SIGINT_EXIT = 128 + signal.SIGINT
SIGTERM_EXIT = 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived; unwinds like Ctrl-C."""


_depth = 0  # nesting of sigterm_interrupts() (cli.main, then trace.run inside it)
_stopping = False  # an interrupt was raised: its cleanup is running, later signals wait for it
_raised: int | None = None  # the signal whose interrupt was raised last
_again: threading.Timer | None = None  # a lost interrupt's signal, about to be sent again
REDELIVER_S = 0.001


def _redeliver_lost(unraisable: Any, previous: Any) -> None:
    """sys.unraisablehook: an interrupt Python dropped (raised in a fork hook or a __del__) is sent again."""
    global _stopping, _again
    if isinstance(unraisable.exc_value, KeyboardInterrupt) and _raised is not None:
        _stopping = False
        _again = threading.Timer(REDELIVER_S, os.kill, (os.getpid(), _raised))
        _again.daemon = True
        _again.start()
        return
    previous(unraisable)


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    global _depth, _stopping, _raised
    owner = os.getpid()

    def handler(signum: int, frame: object) -> None:
        global _stopping, _raised
        if os.getpid() != owner:
            os._exit(128 + signum)
        if _stopping:
            return
        _stopping, _raised = True, signum
        raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    old_hook = sys.unraisablehook
    if _depth == 0:
        sys.unraisablehook = lambda u: _redeliver_lost(u, old_hook)
    _depth += 1
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)
        _depth -= 1
        if _depth == 0:  # the outermost: the cleanup is over; a later run in this process starts afresh
            sys.unraisablehook = old_hook
            if _again is not None:  # lost in the run's last millisecond, which completed: nothing to stop
                _again.cancel()
            _stopping, _raised = False, None


def exit_status(interrupt: KeyboardInterrupt) -> int:
    return SIGTERM_EXIT if isinstance(interrupt, Terminated) else SIGINT_EXIT
