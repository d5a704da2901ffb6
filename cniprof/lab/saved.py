# SPDX-License-Identifier: Apache-2.0
"""The realized lab's topology on disk, so `lab status` and `trace` in later processes know what is up.

It lives under /run (tmpfs): after a reboot the namespaces are gone, and so is the file that described them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from cniprof.cni.topology import LAB_ID, Topology
from cniprof.errors import EnvironmentProblem
from cniprof.files import write_text

STATE_DIR = Path("/run/cniprof")
STATE_FILE = STATE_DIR / (f"lab-{LAB_ID}.json" if LAB_ID else "lab.json")
LOCK_FILE = STATE_DIR / (f"lab-{LAB_ID}.lock" if LAB_ID else "lab.lock")


def save(topology: Topology, path: Path = STATE_FILE) -> None:
    """Write atomically (temp file + rename) so a reader never sees half a topology."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, topology.to_json() + "\n")  # mode 0644: `lab status` and reports read it without root


def load(path: Path = STATE_FILE) -> Topology | None:
    """The saved topology, or None when no lab was recorded."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise EnvironmentProblem(f"{path} is unreadable ({e}); run `cniprof lab down` to reset the lab") from None
    try:
        return Topology.from_json(text)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise EnvironmentProblem(f"{path} is unreadable ({e}); run `cniprof lab down` to reset the lab") from None


def clear(path: Path = STATE_FILE) -> bool:
    """Remove the state file; True if there was one."""
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def locked(path: Path = LOCK_FILE) -> Iterator[None]:
    """Serialise `lab up` / `lab down` between processes (two builds of the same names would fight)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
