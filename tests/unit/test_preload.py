# SPDX-License-Identifier: Apache-2.0
"""cniprof.preload: lazily imported modules loaded on a thread of their own, waited for before use."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import lazy_loader
import pytest

from cniprof.preload import Preload, load_now


@pytest.fixture
def make_module(tmp_path: Path) -> Iterator:
    """A lazily imported module of unique name whose code records the thread that ran it."""
    names: list[str] = []
    sys.path.insert(0, str(tmp_path))

    def make(body: str = "") -> object:
        name = f"cniprof_preload_{uuid.uuid4().hex}"
        (tmp_path / f"{name}.py").write_text(
            "import threading\nLOADED_ON = threading.current_thread().name\n" + body + "\nDONE = True\n")
        names.append(name)
        return lazy_loader.load(name)

    yield make
    sys.path.remove(str(tmp_path))
    for name in names:
        sys.modules.pop(name, None)


def _ran(module: object) -> bool:
    """Whether a lazy module's code has run, without touching (and so running) it."""
    return type(module).__name__ != "_LazyModule"


def test_loads_on_its_own_thread_once_started(make_module) -> None:
    a, b = make_module(), make_module()
    preload = Preload(a, b)
    time.sleep(0.05)
    assert not _ran(a) and not _ran(b), "nothing loads before start()"
    preload.start()
    preload.wait()
    assert a.LOADED_ON == b.LOADED_ON == "cniprof-preload"
    assert a.DONE and b.DONE
    preload.wait()  # again: returns at once


def test_wait_without_start_loads_on_the_caller(make_module) -> None:
    a = make_module()
    Preload(a).wait()
    assert a.LOADED_ON == threading.current_thread().name


def test_an_error_of_the_load_is_raised_by_wait(make_module) -> None:
    bad = make_module("raise ImportError('no such thing here')")
    preload = Preload(bad)
    preload.start()
    with pytest.raises(ImportError, match="no such thing"):
        preload.wait()
    with pytest.raises(ImportError):  # and every time after
        preload.wait()


def test_an_interrupt_lands_in_wait_not_in_the_import(make_module) -> None:
    """SIGINT while the main thread waits: a clean KeyboardInterrupt at once; the import ends whole on its
    thread (an interrupted import would leave a half module, or come out as another error)."""
    slow = make_module("import time\ntime.sleep(0.6)")
    preload = Preload(slow)
    preload.start()
    threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT)).start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        preload.wait()
    assert time.monotonic() - t0 < 0.5, "the interrupt waited for the import"
    preload.wait()
    assert slow.DONE and slow.LOADED_ON == "cniprof-preload"


def test_load_now(make_module) -> None:
    a = make_module()
    load_now(a)
    assert _ran(a) and a.DONE
