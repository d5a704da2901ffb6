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
raises it again a millisecond later (by the timer below), until it lands where it unwinds the run (found by the
signal suite: a Ctrl-C during `lab up` was lost this way and the lab was built anyway).

An interrupt can also be swallowed outright: C extension code that clears any error it meets (numpy's dtype
comparison does, numpy/numpy#20596, and pandas compares dtypes on every CSV and Parquet write) drops a
KeyboardInterrupt raised inside it, and the run goes on as if no signal came (found by the signal suite: a
SIGTERM during the export's CSV write was lost, the run exported and exited 0). So every raised interrupt is
watched: a one-shot real-time timer (SIGALRM; no thread, nothing a signal handler could deadlock on) goes off
WATCH_S later. If by then the interrupt is being handled (an except, finally or __exit__ on its way out holds it,
possibly as the context of an error raised in the cleanup), the cleanup goes on undisturbed; if not, it was
swallowed and is raised again, and watched again. The same timer re-raises one that Python dropped.

pyroute2 forks helper processes to open sockets in other namespaces; they inherit the handlers and must not run
the parent's cleanup (which would tear down the lab under it), so a forked child just exits.

Some library code cannot be left at an arbitrary bytecode: pyroute2 runs every netlink request in an asyncio event
loop of its own, and an interrupt raised inside that loop leaves a task pending, a coroutine never awaited or an
async generator half closed, which Python then reports on stderr after the one line cniprof prints (found by the
signal suite: "Task was destroyed but it is pending!" after a Ctrl-C during the lab build). Such calls run inside
`deferred()`: a signal that arrives there is held and raised as soon as the section ends (milliseconds: a few
netlink requests).
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
_in_flight: KeyboardInterrupt | None = None  # that interrupt (a swallowed one is not found while handling)
_deferring = 0  # nesting of deferred() sections
_held: int | None = None  # the signal that arrived inside one, raised when the outermost ends
_alarm_before: Any = None  # SIGALRM's handler before the first watch of this run (restored at the end)
REDELIVER_S = 0.001  # after one that Python dropped and reported: at once
WATCH_S = 0.01  # after any raised one: a swallowed interrupt is raised again within this


def exception_chain(error: BaseException | None) -> Iterator[BaseException]:
    """error, then what it was raised from or during (__cause__, else __context__), each once."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        yield error
        seen.add(id(error))
        error = error.__cause__ or error.__context__


def interrupt_behind(error: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C or SIGTERM an error was raised from or during, if any: a library that turns the interrupt into
    its own error (numpy's first import re-raises one landing inside it as ImportError), or a cleanup that failed
    while the interrupt unwound the run."""
    return next((e for e in exception_chain(error) if isinstance(e, KeyboardInterrupt)), None)


def _being_handled() -> bool:
    """True while the interrupt raised last is on its way out: an except, finally or __exit__ holds it, or an
    error raised during that cleanup comes from it."""
    return any(e is _in_flight for e in exception_chain(sys.exc_info()[1]))


def _interrupt(signum: int) -> None:
    """Raise the interrupt for signum, watched."""
    global _stopping, _raised, _in_flight
    _stopping, _raised = True, signum
    _in_flight = Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
    _watch(WATCH_S)
    raise _in_flight


def _watch(delay: float) -> None:
    global _alarm_before
    if _depth == 0:
        return
    if _alarm_before is None:
        _alarm_before = signal.signal(signal.SIGALRM, _on_watch)
    signal.setitimer(signal.ITIMER_REAL, delay)


def _on_watch(signum: int, frame: object) -> None:
    """SIGALRM: the interrupt raised last is either on its way out (nothing to do) or was lost (raise it again)."""
    if _raised is None or _depth == 0 or _being_handled():
        return
    _interrupt_or_hold(_raised)


def _interrupt_or_hold(signum: int) -> None:
    global _held
    if _deferring:
        _held = _held or signum  # the first one counts, as outside
        return
    _interrupt(signum)


@contextmanager
def deferred() -> Iterator[None]:
    """A Ctrl-C or SIGTERM that arrives inside is raised when the (outermost) section ends, whether its body
    returned or raised; with no sigterm_interrupts() around it, signals act as usual. Signals are handled on the
    main thread only, so a section on another thread holds nothing back."""
    global _deferring, _held
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
        if _deferring == 0 and _held is not None:
            signum, _held = _held, None
            _interrupt(signum)


def _redeliver_lost(unraisable: Any, previous: Any) -> None:
    """sys.unraisablehook: an interrupt Python dropped (raised in a fork hook or a __del__) is raised again."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt) and _raised is not None:
        _watch(REDELIVER_S)
        return
    previous(unraisable)


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    global _depth, _stopping, _raised, _in_flight, _alarm_before, _held
    owner = os.getpid()

    def handler(signum: int, frame: object) -> None:
        if os.getpid() != owner:
            os._exit(128 + signum)
        if _stopping:
            if _being_handled():
                return  # its cleanup is running: a second signal waits for it
            signum = _raised or signum  # swallowed on its way: the same interrupt again
        _interrupt_or_hold(signum)

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    old_hook = sys.unraisablehook
    if _depth == 0:
        sys.unraisablehook = lambda u: _redeliver_lost(u, old_hook)
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0 and _alarm_before is not None:  # the run completed or unwound: nothing left to watch
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, _alarm_before)
            _alarm_before = None
        for sig, previous in old.items():
            signal.signal(sig, previous)
        if _depth == 0:  # the outermost: the cleanup is over; a later run in this process starts afresh
            sys.unraisablehook = old_hook
            _stopping, _raised, _in_flight, _held = False, None, None, None


def exit_status(interrupt: KeyboardInterrupt) -> int:
    return SIGTERM_EXIT if isinstance(interrupt, Terminated) else SIGINT_EXIT
