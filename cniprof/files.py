# SPDX-License-Identifier: Apache-2.0
"""Files written whole or not at all: a unique temporary name beside the target, then an atomic rename.

A reader (or a later `cniprof report`) never sees half a file, and an interrupted writer leaves its temporary
file removed. JSON refuses NaN and infinity (they are not JSON); a path that cannot be written is one UsageError
line naming it.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cniprof.errors import UsageError


def fresh_sibling(target: Path, suffix: str) -> Path:
    """An unused name beside target (`.NAME.<64 random bits>SUFFIX`); nothing is created.

    Named before it is created, so that the cleanup of whoever creates it knows the name even when an interrupt
    lands between the creating call and its result (tempfile.mkstemp/mkdtemp leave a file behind then)."""
    return target.parent / f".{target.name}.{secrets.token_hex(8)}{suffix}"


@contextmanager
def replacing(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block ends without an error it becomes `path`."""
    target = Path(path)
    tmp = fresh_sibling(target, ".tmp")
    try:
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except OSError as e:
            raise UsageError(f"cannot write {target}: {e.strerror or e}") from None
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with replacing(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json(path: str | os.PathLike[str], data: Any, default: Callable[[Any], Any] | None = None) -> Path:
    return write_text(path, json.dumps(data, indent=2, allow_nan=False, ensure_ascii=False, default=default) + "\n")


def writable_dir(path: str | os.PathLike[str]) -> Path:
    """Check before any work is done that `path` is (or can be created as) a writable directory; one line if not.

    Creates nothing: a trace that would lose its results at the end is refused at the start instead."""
    target = Path(path)
    probe = target
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise UsageError(f"cannot write to {target}: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write to {target}: {probe} is not writable")
    if str(target.resolve()).startswith(("/proc/", "/sys/")):
        raise UsageError(f"cannot write to {target}: not a place for files")
    return target
