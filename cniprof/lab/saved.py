# SPDX-License-Identifier: Apache-2.0
"""The realized lab's topology on disk, so `lab status` and `trace` in later processes know what is up.

It lives under /run (tmpfs): after a reboot the namespaces are gone, and so is the file that described them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from cniprof import runfiles
from cniprof.cni.topology import LAB_ID, Topology
from cniprof.errors import EnvironmentProblem, UsageError
from cniprof.files import write_text

STATE_DIR = Path("/run/cniprof")
STATE_FILE = STATE_DIR / (f"lab-{LAB_ID}.json" if LAB_ID else "lab.json")
LOCK_FILE = STATE_DIR / (f"lab-{LAB_ID}.lock" if LAB_ID else "lab.lock")
RUN_FILE = STATE_DIR / (f"lab-{LAB_ID}.run" if LAB_ID else "lab.run")  # held (flock) by the run using the lab


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
        return Topology.from_dict(runfiles.check(runfiles.parse_json(text), runfiles.LAB, str(path)))
    except UsageError as e:
        why = str(e).removeprefix(f"{path}: ")
        raise EnvironmentProblem(f"{path} is unreadable ({why}); run `cniprof lab down` to reset the lab") from None
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
        raise EnvironmentProblem(f"{path} is unreadable ({e}); run `cniprof lab down` to reset the lab") from None


def clear(path: Path = STATE_FILE) -> bool:
    """Remove the state file; True if there was one."""
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False


def _lock(path: Path, blocking: bool) -> tuple[int, bool]:
    """(fd, True) holding path's flock, or (fd, False) when another holds it and blocking is False.

    Lock files are removed by their holder when done (nothing is left in /run/cniprof for every lab id a test
    session or a user ever used), so a lock taken on a file that was meanwhile removed or replaced is dropped and
    taken again on the file now at path: two holders can never hold two different files of one name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            return fd, False
        except BaseException:
            os.close(fd)
            raise
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd, True
        except FileNotFoundError:
            pass
        os.close(fd)


def _unlock(path: Path, fd: int) -> None:
    """Remove the lock file while still holding it, then release it."""
    try:
        path.unlink(missing_ok=True)
    finally:
        os.close(fd)  # closing releases the lock


@contextlib.contextmanager
def locked(path: Path = LOCK_FILE) -> Iterator[None]:
    """Serialise `lab up` / `lab down` between processes (two builds of the same names would fight)."""
    fd, _ = _lock(path, blocking=True)
    try:
        yield
    finally:
        _unlock(path, fd)


def node_run_file(netns: str | None) -> Path:
    """The run file of a live node (`trace --cni auto`): two traces of one node would mix as two of a lab do."""
    return STATE_DIR / f"node-{netns or 'root'}.run"


_held: dict[Path, int] = {}  # run files this process holds, and how deeply (a study's traces nest in the study)


def _holder(fd: int) -> str:
    """Who holds a run file, from what it wrote into it: `pid 42 (cniprof trace ...) for 12 s`."""
    try:
        doc = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {int(doc['pid'])} ({doc['command']}) for {time.time() - float(doc['started']):.0f} s"
    except (OSError, ValueError, KeyError, TypeError):
        return "another cniprof run"  # it took the lock and has not written its name yet


def holder(path: Path = RUN_FILE) -> str | None:
    """Who is using the lab for a run now (None when nobody is)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder(fd)
        return None
    finally:
        os.close(fd)


@contextlib.contextmanager
def in_use(command: str, path: Path = RUN_FILE) -> Iterator[None]:
    """The lab is this run's while the block runs: a second run on the same lab (whose traffic and probes would
    mix with this one's, and whose generators would want the same ports) is refused in one line naming this one.

    The kernel drops the lock when the process ends, however it ends, so a crashed run never blocks the next one.
    A process already holding it (a study's traces) nests."""
    if path in _held:
        _held[path] += 1
        try:
            yield
        finally:
            _held[path] -= 1
        return
    fd, mine = _lock(path, blocking=False)
    if not mine:
        try:
            who = _holder(fd)
        finally:
            os.close(fd)
        raise EnvironmentProblem(f"the lab is in use by {who}: wait for it to end, or give this run a lab of its "
                                 "own (CNIPROF_LAB_ID=NAME, letters and digits)")
    try:
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "command": command, "started": time.time()}).encode(), 0)
        _held[path] = 1
        try:
            yield
        finally:
            del _held[path]
    finally:
        _unlock(path, fd)
