# SPDX-License-Identifier: Apache-2.0
"""A node agent's session on a cluster: `cniprof agent` started in the agent pod by the API server's exec, its
stdin and stdout carried by the exec websocket (kubernetes.stream), one JSON object per line.

`ExecChannel` is a run.channel.Channel (ARCHITECTURE.md "Node agents"): send, recv (None when
nothing arrived in time), ChannelClosed once the stream ended (the agent exited, or the connection broke: the
reason says which), close and node. Closing sends the v5 protocol's stdin close (the agent stops within 1 s of
EOF, its own rule) and then closes the websocket; with the older v4 protocol, which cannot close stdin alone, the
websocket close ends the exec session and the runtime closes the agent's stdin.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import lazy_loader
import yaml
from websocket import WebSocketException

from cniprof.run.channel import ChannelClosed

if TYPE_CHECKING:
    import kubernetes
    from kubernetes.stream.ws_client import WSClient
else:  # imported on first use: `trace` without --k8s never waits for the kubernetes client (~0.5 s)
    kubernetes = lazy_loader.load("kubernetes")

log = logging.getLogger(__name__)
CLOSE_WAIT_S = 2.0


def exit_status(ws: WSClient) -> tuple[int | None, str | None]:
    """The exec's end as the API server reports it on the error channel: (exit code, None), or (None, the
    failure message), or (None, None) when the stream closed without a status (a broken connection)."""
    raw = ws.read_channel(kubernetes.stream.ws_client.ERROR_CHANNEL)
    try:
        status = yaml.safe_load(raw) if raw else None
    except yaml.YAMLError:
        status = None
    if not isinstance(status, dict):
        return None, None
    if status.get("status") == "Success":
        return 0, None
    causes = (status.get("details") or {}).get("causes") or []
    code = next((c.get("message") for c in causes if c.get("reason") == "ExitCode"), None)
    if code is not None and str(code).lstrip("-").isdigit():
        return int(code), None
    return None, str(status.get("message", "unknown error"))


class ExecChannel:
    def __init__(self, node: str, ws: WSClient, where: str) -> None:
        self.node = node
        self.ws = ws
        self.where = where  # "ns/agent-pod" for messages
        self._stderr: deque[str] = deque(maxlen=20)
        self._closed: str | None = None
        self._buf = ""  # stdout received, not yet a whole line

    def _drain_stderr(self) -> None:
        text = self.ws.read_channel(kubernetes.stream.ws_client.STDERR_CHANNEL)
        for line in text.splitlines():
            self._stderr.append(line)
            log.debug("agent %s: %s", self.node, line)

    def _reason(self) -> str:
        """Why the stream ended: the exec status the API server sent on the error channel, or the broken
        connection, with the agent's last stderr line."""
        if self._closed is None:
            self._drain_stderr()
            code, failure = exit_status(self.ws)
            if code is not None:
                why = f"the agent in {self.where} exited with status {code}"
            elif failure:
                why = f"the exec in {self.where} failed: {failure}"
            else:
                why = f"the exec stream to {self.where} closed"
            last = next((line for line in reversed(self._stderr) if line.strip()), "")
            self._closed = f"{why}: {last.strip()}" if last else why
        return self._closed

    def send(self, message: Mapping[str, Any]) -> None:
        if self._closed is not None or not self.ws.is_open():
            raise ChannelClosed(self._reason())
        try:
            self.ws.write_stdin(json.dumps(message, separators=(",", ":")) + "\n")
        except (WebSocketException, OSError):
            raise ChannelClosed(self._reason()) from None

    def _next_line(self) -> str | None:
        if "\n" in self._buf:
            line, self._buf = self._buf.split("\n", 1)
            return line
        return None

    def recv(self, timeout: float) -> dict[str, Any] | None:
        """The next object; lines that arrived before the stream closed are still delivered, then
        ChannelClosed."""
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            line = self._next_line()
            if line is None and self.ws.is_open():
                try:
                    self.ws.update(timeout=max(0.0, deadline - time.monotonic()))
                except (WebSocketException, OSError) as e:  # the connection broke under the client
                    log.debug("exec stream to %s broke: %s", self.where, e)
                    self.ws.close()
                self._buf += self.ws.read_channel(kubernetes.stream.ws_client.STDOUT_CHANNEL)
                self._drain_stderr()
                line = self._next_line()
            if line is not None:
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError:
                    log.warning("agent %s wrote a line that is not JSON: %r", self.node, line[:200])
                    continue
                return obj if isinstance(obj, dict) else {"type": "invalid", "value": obj}
            if not self.ws.is_open():
                raise ChannelClosed(self._reason())
            if time.monotonic() >= deadline:
                return None

    def close(self) -> None:
        """Close the agent's stdin, give it CLOSE_WAIT_S to stop (its stream then ends), close the websocket."""
        if self.ws.is_open():
            try:
                if self.ws.subprotocol == kubernetes.stream.ws_client.V5_CHANNEL_PROTOCOL:
                    self.ws.close_channel(kubernetes.stream.ws_client.STDIN_CHANNEL)
                    self.ws.run_forever(timeout=CLOSE_WAIT_S)
            except (WebSocketException, OSError):
                pass
        try:
            self.ws.close()
        except (WebSocketException, OSError):
            pass
