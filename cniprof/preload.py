# SPDX-License-Identifier: Apache-2.0
"""Loading modules imported lazily (lazy_loader): at once, or on a thread while the run goes on.

A lazy_loader module runs its code on its first attribute access, on whichever thread touches it first. Two
threads touching one lazy module while it loads can see it half run (Python 3.11's importlib LazyLoader has no
lock), so a module given to a Preload is not touched by any other thread until wait() has returned.

Why a thread: pandas and what the live view draws with take ~0.3 s to import. Imported by the main thread before
the probes attach, they delay the attach past its 0.5 s goal (issue 15); imported by the main thread during the
run, an interrupt can land inside a first import and come out as another error (numpy's first import turns a
KeyboardInterrupt into ImportError). Signals are handled on the main thread only: an import on another thread
is never interrupted, and the main thread's wait() is, cleanly.
"""

from __future__ import annotations

import threading
from typing import Any


def load_now(*modules: Any) -> None:
    """Finish loading modules imported lazily (a lazy_loader proxy loads on its first attribute access)."""
    for module in modules:
        _ = module.__name__


class Preload:
    """Load modules on a thread of their own; wait() before touching any of them.

    preload = Preload(pd, summary)
    preload.start()       # e.g. once the probes are attached
    ...
    preload.wait()        # before the first use; re-raises what the load raised
    """

    def __init__(self, *modules: Any) -> None:
        self.modules = modules
        self._started = False
        self._loaded = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> None:
        if not self._started:
            self._started = True
            # not a daemon: an exit while it loads waits for the import to end instead of tearing it down midway
            threading.Thread(target=self._load, name="cniprof-preload").start()

    def _load(self) -> None:
        try:
            load_now(*self.modules)
        except BaseException as e:  # noqa: BLE001 - re-raised on the waiting thread
            self._error = e
        finally:
            self._loaded.set()

    def wait(self) -> None:
        """Return once every module is loaded (loading them here if start() was never called)."""
        if not self._started:
            self._started = True
            self._load()
        # an Event, not Thread.join: an interrupted join() marks a running thread as ended (Python 3.11)
        self._loaded.wait()
        if self._error is not None:
            raise self._error
