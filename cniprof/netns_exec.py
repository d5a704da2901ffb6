# SPDX-License-Identifier: Apache-2.0
"""The one way cniprof runs something inside a network namespace: a command (`ip netns exec NETNS argv...`) or a
Python function (`call_in`: a helper thread that setns() into it).

`run_in` waits for the command and returns its stdout, or raises one line naming the command, the namespace and
the tool's first error line; `attempt_in` returns the completed process for callers that judge the exit status
themselves (e.g. "no such table" is an answer, not an error). `argv_in` wraps argv for long-running processes
(generators), with a parent-death SIGKILL so nothing outlives cniprof.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

from cniprof.errors import CniprofError, EnvironmentProblem

DEFAULT_TIMEOUT_S = 10.0
T = TypeVar("T")


def argv_in(netns: str, argv: Sequence[str]) -> list[str]:
    """argv wrapped to run inside netns, killed when its parent dies (setpriv --pdeathsig, where available).

    `ip netns exec` execs the command in place (no extra fork), so the pid of the process is the command's.
    """
    wrapped = ["ip", "netns", "exec", netns, *argv]
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--", *wrapped] if setpriv else wrapped


def attempt_in(netns: str, argv: Sequence[str], *, stdin: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
               what: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run argv inside netns and return the completed process whatever its exit status; a command that cannot be
    started or does not finish within timeout_s is a one-line error."""
    what = what or argv[0]
    try:
        return subprocess.run(["ip", "netns", "exec", netns, *argv], input=stdin, capture_output=True, text=True,
                              timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise CniprofError(f"{what} in {netns} did not finish within {timeout_s:.0f} s") from None
    except FileNotFoundError:
        raise EnvironmentProblem("ip not found: install the Debian package iproute2") from None
    except OSError as e:
        raise CniprofError(f"{what} in {netns}: {e.strerror or e}") from None


def run_in(netns: str, argv: Sequence[str], *, stdin: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
           what: str | None = None) -> str:
    """Run argv inside netns; its stdout, or a one-line CniprofError with the tool's first error line."""
    proc = attempt_in(netns, argv, stdin=stdin, timeout_s=timeout_s, what=what)
    if proc.returncode != 0:
        raise CniprofError(f"{what or argv[0]} failed in {netns}: {first_error(proc)}")
    return proc.stdout


def first_error(proc: subprocess.CompletedProcess[str]) -> str:
    return next((ln.strip() for ln in proc.stderr.splitlines() if ln.strip()), f"exit code {proc.returncode}")


def in_thread(fn: Callable[[], T], setup: Callable[[], None] | None = None, name: str = "cniprof-helper") -> T:
    """Run setup() then fn() in a fresh thread, so per-thread state (netns, mount ns) dies with the thread."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            if setup:
                setup()
            result.append(fn())
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            error.append(e)

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def enter_netns(name: str) -> None:
    """setns() the calling thread into a named namespace (/run/netns/<name>) or an nsfs path."""
    from pyroute2 import (
        netns,  # here, not at the top: generator helper scripts import this module and start fast
    )

    netns.setns(name, flags=0)  # flags=0: never create a namespace by accident


def call_in(netns: str, fn: Callable[[], T]) -> T:
    """fn() in a helper thread that entered `netns` (a name under /run/netns or an nsfs path).

    setns(CLONE_NEWNET) changes only the calling thread; /proc/sys/net, new sockets and BPF links follow the
    thread's namespace. The thread dies afterwards, so the caller's thread never leaves its namespace."""
    return in_thread(fn, setup=lambda: enter_netns(netns), name=f"netns:{netns}")
