# SPDX-License-Identifier: Apache-2.0
"""Machine-wide sysctls a scenario changes with `host_changes: true`, always put back, also after a crash.

Why a state file: these settings (net.core.netdev_max_backlog, busy_poll, busy_read, rps_sock_flow_entries) are
not per network namespace, so they change the whole machine, not only the lab. The old values are read back and
written to /run/cniprof/host-sysctl[-<lab id>].json BEFORE anything changes; the block restores them and removes
the file. A process killed in between leaves the file, and `cniprof lab down` (cleanup.teardown) restores from it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cniprof.cni.topology import LAB_ID
from cniprof.errors import CniprofError
from cniprof.files import write_json
from cniprof.lab.saved import STATE_DIR

log = logging.getLogger(__name__)

STATE_FILE = STATE_DIR / (f"host-sysctl-{LAB_ID}.json" if LAB_ID else "host-sysctl.json")
PROC_SYS = Path("/proc/sys")


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
    """The machine-wide sysctls set for the block (yields {key: old value} of those changed); restored after."""
    if path.exists():  # a crashed run's values: put them back first, they are the machine's real ones
        restore_from_state(path)
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
