# SPDX-License-Identifier: Apache-2.0
"""The first SIGINT/SIGTERM interrupts; a second one while that interrupt's cleanup runs does not break the
cleanup off halfway (real signals sent to this process)."""

from __future__ import annotations

import os
import signal

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
