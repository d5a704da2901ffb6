# SPDX-License-Identifier: Apache-2.0
"""The lab's lock files (cniprof.lab.saved): held with flock, removed by their holder when done, so nothing is
left in the state directory for every lab id ever used; a waiter never ends up holding a removed file."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from cniprof.errors import EnvironmentProblem
from cniprof.lab import saved


def test_locked_leaves_no_file(tmp_path: Path) -> None:
    lock = tmp_path / "lab-x.lock"
    with saved.locked(lock):
        assert lock.is_file()
    assert not lock.exists()


def test_in_use_leaves_no_file_and_refuses_a_second_run(tmp_path: Path) -> None:
    run = tmp_path / "lab-x.run"
    with saved.in_use("cniprof trace --duration 5", run):
        assert saved.holder(run).startswith(f"pid {saved.os.getpid()} (cniprof trace --duration 5)")
        saved._held.clear()  # a second run, as another process would come: a second open file description
        try:
            with pytest.raises(EnvironmentProblem, match=r"in use by pid \d+ \(cniprof trace --duration 5\)"), \
                    saved.in_use("cniprof tune", run):
                pass
        finally:
            saved._held[run] = 1
    assert not run.exists()
    assert saved.holder(run) is None


def test_a_waiter_holds_the_file_at_the_path_not_the_removed_one(tmp_path: Path) -> None:
    """A waits on the file B holds; B removes it as it lets go; A must then hold a lock a third comer respects."""
    lock = tmp_path / "lab-x.lock"
    order: list[str] = []
    b_in, a_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def a() -> None:
        b_in.wait()
        with saved.locked(lock):
            order.append("a")
            a_in.set()
            a_out.wait(5)

    t = threading.Thread(target=a)
    t.start()
    with saved.locked(lock):
        order.append("b")
        b_in.set()
        time.sleep(0.2)  # A is blocked on B's file now
    assert a_in.wait(5)
    third = saved._lock(lock, blocking=False)
    try:
        assert third[1] is False, "a third comer got the lock while A held it: A held a removed file"
    finally:
        saved.os.close(third[0])
    a_out.set()
    t.join(5)
    assert order == ["b", "a"] and not lock.exists()
