# SPDX-License-Identifier: Apache-2.0
"""The one way cniprof runs a command inside a network namespace: `ip netns exec NETNS argv...`.

`run_in` waits for the command and returns its stdout, or raises one line naming the command, the namespace and
the tool's first error line; `attempt_in` returns the completed process for callers that judge the exit status
themselves (e.g. "no such table" is an answer, not an error). `argv_in` wraps argv for long-running processes
(generators), with a parent-death SIGKILL so nothing outlives cniprof.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence

from cniprof.errors import CniprofError, EnvironmentProblem

DEFAULT_TIMEOUT_S = 10.0


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
