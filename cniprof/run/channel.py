# SPDX-License-Identifier: Apache-2.0
"""How a coordinator talks to a node agent: a line-oriented JSON stream, whatever carries it.

`Channel` is the whole contract (ARCHITECTURE.md "Node agents"): send one object, receive one object or nothing
within a timeout, learn that the stream ended (the agent is lost) and why, close. `LocalChannel` runs
`cniprof agent` as a child process (the lab: one per lab node); a Kubernetes pod exec stream (issue 13) implements
the same members, and the coordinator never knows which it has.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

log = logging.getLogger(__name__)

CLOSE_WAIT_S = 5.0  # an agent told to stop exits at once; a busy machine may take seconds to tear down


class ChannelClosed(Exception):
    """The stream ended: the agent exited, was killed, or its transport broke. str() says which."""


class Channel(Protocol):
    node: str

    def send(self, message: Mapping[str, Any]) -> None:
        """Write one object as one line; raises ChannelClosed when the agent can no longer read."""

    def recv(self, timeout: float) -> dict[str, Any] | None:
        """The next object, None when none arrived within timeout; raises ChannelClosed once the stream ended."""

    def close(self) -> None:
        """Close the agent's stdin (it stops within 1 s), wait, then terminate it; idempotent."""


def _signal_name(rc: int) -> str:
    try:
        return signal.Signals(-rc).name
    except ValueError:
        return f"signal {-rc}"


def exit_reason(rc: int | None, stderr_tail: Sequence[str] = ()) -> str:
    """Why an agent process ended, in words (with its last stderr line, if any)."""
    if rc is None:
        why = "its output stream closed"
    elif rc < 0:
        why = f"killed by {_signal_name(rc)}"
    else:
        why = f"exited with status {rc}"
    last = next((line for line in reversed(stderr_tail) if line.strip()), "")
    return f"{why}: {last.strip()}" if last else why


class LocalChannel:
    """`cniprof agent` as a child process of this one, stdin/stdout as the stream.

    Reader threads turn stdout lines into objects on a queue and keep the last lines of stderr (logged at debug
    level), so recv() never blocks longer than asked and a dead agent is noticed at the next recv()."""

    def __init__(self, node: str, argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None):
        self.node = node
        self.argv = list(argv) if argv is not None else [sys.executable, "-m", "cniprof", "agent", "--node", node]
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._stderr: deque[str] = deque(maxlen=20)
        self._closed_reason: str | None = None
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=dict(env) if env is not None else None,
                                     start_new_session=True)  # a terminal's Ctrl-C is the coordinator's to handle
        self.pid = self.proc.pid
        self._out = threading.Thread(target=self._read_stdout, name=f"agent-{node}-out", daemon=True)
        self._err = threading.Thread(target=self._read_stderr, name=f"agent-{node}-err", daemon=True)
        self._out.start()
        self._err.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                obj = json.loads(line)
            except ValueError:
                log.warning("agent %s wrote a line that is not JSON: %r", self.node, line[:200])
                continue
            self._queue.put(obj if isinstance(obj, dict) else {"type": "invalid", "value": obj})
        self._queue.put(None)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            self._stderr.append(line)
            log.debug("agent %s: %s", self.node, line)

    def _reason(self) -> str:
        if self._closed_reason is None:
            try:
                rc = self.proc.wait(timeout=CLOSE_WAIT_S)
            except subprocess.TimeoutExpired:
                rc = None
            self._err.join(timeout=0.5)
            self._closed_reason = exit_reason(rc, list(self._stderr))
        return self._closed_reason

    def send(self, message: Mapping[str, Any]) -> None:
        if self._closed_reason is not None or self.proc.stdin is None or self.proc.stdin.closed:
            raise ChannelClosed(self._closed_reason or "its stdin is closed")
        try:
            self.proc.stdin.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            raise ChannelClosed(self._reason()) from None

    def recv(self, timeout: float) -> dict[str, Any] | None:
        if self._closed_reason is not None:
            raise ChannelClosed(self._closed_reason)
        try:
            obj = self._queue.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None
        if obj is None:
            raise ChannelClosed(self._reason())
        return obj

    def close(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=CLOSE_WAIT_S)
        except subprocess.TimeoutExpired:
            log.warning("agent %s (pid %d) did not stop on stdin EOF; terminating it", self.node, self.pid)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=CLOSE_WAIT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.join(timeout=0.5)
        self._err.join(timeout=0.5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        if self._closed_reason is None:
            self._closed_reason = exit_reason(self.proc.returncode, list(self._stderr))

    @property
    def stderr_tail(self) -> list[str]:
        return list(self._stderr)


def local_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a local agent: this process's (CNIPROF_LAB_ID, PATH, the venv) plus extra."""
    env = dict(os.environ)
    env.update(extra or {})
    return env
