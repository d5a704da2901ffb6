# SPDX-License-Identifier: Apache-2.0
"""The first SIGINT/SIGTERM interrupts; a second one while that interrupt's cleanup runs does not break the
cleanup off halfway (real signals sent to this process)."""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import pytest

from cniprof.interrupts import (
    SIGINT_EXIT,
    SIGTERM_EXIT,
    Terminated,
    deferred,
    exit_status,
    sigterm_interrupts,
)


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


def _swallow_one(sig: int) -> None:
    """What C code that clears every error does (numpy/numpy#20596): the interrupt raised inside is gone."""
    try:
        os.kill(os.getpid(), sig)
        for _ in range(1000):
            pass
    except BaseException:  # noqa: BLE001, S110 - the point: an extension swallowing the interrupt
        pass


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_swallowed_interrupt_is_raised_again(sig: int) -> None:
    went_on = []
    with pytest.raises(KeyboardInterrupt) as caught, sigterm_interrupts():
        _swallow_one(sig)
        went_on.append(True)  # as the export went on after numpy's dtype comparison ate the SIGTERM
        for _ in range(200):
            time.sleep(0.01)
        pytest.fail("the swallowed interrupt was not raised again")
    assert went_on == [True]
    assert isinstance(caught.value, Terminated) == (sig == signal.SIGTERM)


def test_an_interrupt_swallowed_by_numpy_is_raised_again() -> None:
    """The real swallower: numpy's dtype comparison with pandas' string dtype (pandas makes it on every CSV
    write) clears a KeyboardInterrupt raised inside it about half the time. A SIGTERM at a random moment of a
    loop of such comparisons, until one is swallowed (the loop ends as if none came): the run must still stop."""
    np = pytest.importorskip("numpy")
    pd = pytest.importorskip("pandas")
    a, b = np.dtype(object), pd.StringDtype("pyarrow")
    for _ in range(100):
        went_on = False
        shooter = threading.Timer(random.uniform(0, 0.002), os.kill, (os.getpid(), signal.SIGTERM))
        try:
            with sigterm_interrupts():
                shooter.start()
                while shooter.is_alive():  # a comparison is running in this thread when it goes off
                    for _ in range(100):
                        a == b  # noqa: B015 - the comparison is the point
                shooter.join()
                went_on = True  # no interrupt: numpy swallowed it
                for _ in range(200):
                    time.sleep(0.01)
                pytest.fail("the interrupt numpy swallowed was not raised again")
        except Terminated:
            if went_on:
                return
    pytest.skip("numpy swallowed none of 100 interrupts (a numpy that no longer clears them)")


def test_the_watch_leaves_a_slow_cleanup_alone() -> None:
    """The timer that finds swallowed interrupts goes off during the cleanup too: the cleanup (longer than the
    timer; an error raised and handled inside it) runs to its end and the first interrupt is the one raised."""
    done = []
    with pytest.raises(Terminated) as caught, sigterm_interrupts():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):
                pass
            pytest.fail("not interrupted")
        finally:
            try:
                raise OSError("a device already gone")  # its context is the interrupt
            except OSError:
                time.sleep(0.1)  # ten watch periods
            time.sleep(0.1)
            done.append(True)
    assert done == [True]
    assert caught.value.__context__ is None


def test_no_watch_outlives_the_run() -> None:
    """A run that completes after a swallowed interrupt (the last millisecond) leaves no timer and SIGALRM as it was."""
    before = signal.getsignal(signal.SIGALRM)
    with sigterm_interrupts():
        _swallow_one(signal.SIGTERM)
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) == before
    time.sleep(0.05)  # a watch that fired now would meet the default action: death by SIGALRM


@pytest.mark.parametrize(("sig", "raised"), [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, Terminated)])
def test_a_signal_inside_a_deferred_section_is_raised_when_it_ends(sig: int, raised: type) -> None:
    done = []
    with pytest.raises(KeyboardInterrupt) as caught, sigterm_interrupts():
        with deferred():
            with deferred():  # nested: only the outermost section's end raises
                os.kill(os.getpid(), sig)
                done.append("inner")
            done.append("outer")
        pytest.fail("the held signal was not raised at the end of the section")
    assert done == ["inner", "outer"]
    assert type(caught.value) is raised


def test_a_deferred_section_that_fails_still_raises_the_held_signal() -> None:
    with pytest.raises(Terminated) as caught, sigterm_interrupts(), deferred():
        os.kill(os.getpid(), signal.SIGTERM)
        raise ValueError("the section's own error")
    assert isinstance(caught.value.__context__, ValueError)


def test_the_first_held_signal_counts_and_nothing_is_held_after() -> None:
    with pytest.raises(Terminated), sigterm_interrupts(), deferred():
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
    with sigterm_interrupts():  # the next run starts with nothing held
        with deferred():
            pass
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)


def test_without_the_handlers_a_deferred_section_holds_nothing() -> None:
    with pytest.raises(KeyboardInterrupt), deferred():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)
        pytest.fail("Python's own Ctrl-C handler was held")


def test_a_deferred_section_on_another_thread_holds_back_nothing() -> None:
    inside, release = threading.Event(), threading.Event()

    def other() -> None:
        with deferred():
            inside.set()
            release.wait(5)

    t = threading.Thread(target=other)
    t.start()
    try:
        inside.wait(5)
        with pytest.raises(KeyboardInterrupt), sigterm_interrupts():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
            pytest.fail("a section on another thread held the main thread's signal")
    finally:
        release.set()
        t.join()
