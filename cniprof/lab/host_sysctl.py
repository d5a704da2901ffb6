# SPDX-License-Identifier: Apache-2.0
"""Machine-wide sysctls a scenario changes with `host_changes: true`, always put back, also after a crash.

Why a state file: these settings (net.core.netdev_max_backlog, busy_poll, busy_read, rps_sock_flow_entries) are
not per network namespace, so they change the whole machine, not only the lab. The old values are read back and
written to /run/cniprof/host-sysctl[-<lab id>].json BEFORE anything changes; the block restores them and removes
the file. A process killed in between leaves the file, and `cniprof lab down` (cleanup.teardown) restores from it.

Why a lock: two cniprof processes changing the same machine-wide value at once (two studies with host_changes,
another lab instance's `lab down` restoring) would each restore what the other had set. `locked()` is one flock
for the machine (not per lab id, since the values are the machine's), held while values are changed and restored;
it is re-entrant within a process, so a caller (a test) can hold it around a whole study.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cniprof.cni.topology import LAB_ID
from cniprof.errors import CniprofError, EnvironmentProblem
from cniprof.files import write_json
from cniprof.lab.saved import STATE_DIR

log = logging.getLogger(__name__)

STATE_FILE = STATE_DIR / (f"host-sysctl-{LAB_ID}.json" if LAB_ID else "host-sysctl.json")
PROC_SYS = Path("/proc/sys")
LOCK_FILE = STATE_DIR / "host-sysctl.lock"  # one for the machine
LOCK_TIMEOUT_S = 120.0

_held = threading.local()
_process_lock = threading.RLock()


@contextmanager
def locked(path: Path = LOCK_FILE, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Exclusive use of the machine-wide sysctls among cniprof processes for the block (re-entrant)."""
    with _process_lock:
        depth = getattr(_held, "depth", 0)
        if depth:
            _held.depth = depth + 1
            try:
                yield
            finally:
                _held.depth -= 1
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise EnvironmentProblem(f"another cniprof process has held the machine-wide sysctls "
                                                 f"({path}) for {timeout_s:.0f} s: run again when it ends") from None
                    time.sleep(0.1)
            _held.depth = 1
            try:
                yield
            finally:
                _held.depth = 0
        finally:
            os.close(fd)  # closing releases the lock


def _path(key: str) -> Path:
    return PROC_SYS / key.replace(".", "/")


def read(key: str) -> str:
    try:
        return " ".join(_path(key).read_text().split())
    except OSError as e:
        raise CniprofError(f"cannot read sysctl {key}: {e.strerror}") from None


def write(key: str, value: str) -> None:
    try:
        _path(key).write_text(str(value))
    except OSError as e:
        raise CniprofError(f"cannot set sysctl {key}={value}: {e.strerror}") from None


def _save(old: dict[str, str], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, old)


def restore(old: dict[str, str]) -> list[str]:
    """Write every old value back; the errors (one line each), none when all went back."""
    errors = []
    for key, value in old.items():
        try:
            write(key, value)
        except CniprofError as e:
            errors.append(str(e))
    return errors


@contextmanager
def applied(values: dict[str, str], path: Path = STATE_FILE) -> Iterator[dict[str, str]]:
    """The machine-wide sysctls set for the block (yields {key: old value} of those changed); restored after.
    Holds `locked()` for the block."""
    with locked(), _applied(values, path) as changed:
        yield changed


@contextmanager
def _applied(values: dict[str, str], path: Path) -> Iterator[dict[str, str]]:
    if path.exists():  # a crashed run's values: put them back first, they are the machine's real ones
        _restore_from_state(path)
    old = {k: read(k) for k in values}
    changed = {k: v for k, v in old.items() if v != " ".join(str(values[k]).split())}
    if changed:
        _save(changed, path)
    try:
        for key in changed:
            write(key, values[key])
        yield changed
    finally:
        if changed:
            errors = restore(changed)
            if errors:
                raise CniprofError(f"could not restore {len(errors)} machine-wide sysctls (kept in {path}; "
                                   f"`cniprof lab down` retries): {errors[0]}")
            path.unlink(missing_ok=True)


def restore_from_state(path: Path = STATE_FILE) -> dict[str, str]:
    """Put back what a crashed run left changed (its state file); what was restored, {} without a file."""
    if not path.exists():
        return {}
    with locked():
        return _restore_from_state(path)


def _restore_from_state(path: Path) -> dict[str, str]:
    try:
        old = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError:
        log.warning("%s is unreadable; removed without restoring", path)
        path.unlink(missing_ok=True)
        return {}
    errors = restore(old)
    if errors:
        raise CniprofError(f"could not restore machine-wide sysctls from {path}: {errors[0]}")
    path.unlink(missing_ok=True)
    log.info("restored machine-wide sysctls %s from %s", old, path)
    return old
