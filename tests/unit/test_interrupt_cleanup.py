# SPDX-License-Identifier: Apache-2.0
"""The first SIGINT/SIGTERM interrupts; a second one while that interrupt's cleanup runs does not break the
cleanup off halfway (real signals sent to this process)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from cniprof.interrupts import SIGINT_EXIT, SIGTERM_EXIT, Terminated, exit_status, sigterm_interrupts


@pytest.mark.parametrize(("first", "then"), [(signal.SIGTERM, signal.SIGINT), (signal.SIGINT, signal.SIGTERM),
                                             (signal.SIGTERM, signal.SIGTERM), (signal.SIGINT, signal.SIGINT)])
def test_a_second_signal_waits_for_the_cleanup(first: int, then: int) -> None:
    cleaned = []
    with pytest.raises(KeyboardInterrupt) as caught, sigterm_interrupts():
        try:
            os.kill(os.getpid(), first)
            pytest.fail("the first signal did not interrupt")
        finally:
            os.kill(os.getpid(), then)  # during the cleanup: must not raise here
            with sigterm_interrupts():  # a nested user (trace.run inside cli.main) keeps it so
                os.kill(os.getpid(), then)
            cleaned.append("all of it")
    assert cleaned == ["all of it"]
    assert isinstance(caught.value, Terminated) == (first == signal.SIGTERM)
    assert exit_status(caught.value) == (SIGTERM_EXIT if first == signal.SIGTERM else SIGINT_EXIT)


def test_a_later_run_in_the_same_process_is_interrupted_again() -> None:
    for _ in range(2):
        with pytest.raises(Terminated), sigterm_interrupts():
            os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


class _Dropper:
    """A __del__ running when the signal arrives: Python drops any exception raised in it."""

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here, inside __del__, and its raise is lost
        for _ in range(1000):  # give the handler bytecode boundaries to run at, still inside __del__
            pass


def test_an_interrupt_python_drops_is_delivered_again() -> None:
    """A signal landing in a __del__ (or an os.fork hook: pyroute2 forks for every namespace) raises where Python
    ignores exceptions; the interrupt must still stop the run, from the next place it can unwind."""
    reached_after = []
    with pytest.raises(Terminated), sigterm_interrupts():
        d = _Dropper()
        del d  # the first raise is dropped here ...
        reached_after.append(True)
        for _ in range(200):  # ... and delivered again within milliseconds
            time.sleep(0.01)
        pytest.fail("the dropped interrupt was not delivered again")
    assert reached_after == [True]


def test_an_interrupt_in_a_fork_hook_is_delivered_again() -> None:
    def hook() -> None:
        if armed:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass

    armed: list[bool] = []
    os.register_at_fork(after_in_parent=hook)
    with pytest.raises(KeyboardInterrupt), sigterm_interrupts():
        armed.append(True)
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        armed.clear()
        os.waitpid(pid, 0)
        for _ in range(200):
            time.sleep(0.01)
        pytest.fail("the interrupt raised in a fork hook was not delivered again")
