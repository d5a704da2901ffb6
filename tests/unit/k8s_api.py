# SPDX-License-Identifier: Apache-2.0
"""A Kubernetes API server's answers under the real `kubernetes` client, with only the transport replaced.

`FakeApiServer` takes the place of urllib3's PoolManager inside the client's RESTClientObject (the lowest level
of the REST path): every request the client would put on the wire is recorded as (method, path?query, headers,
JSON body), and answered from a small in-memory object store the way the API server answers (Status objects
with 403/404/409 codes, pods with their status). Everything above it — generated API methods, serialization,
deserialization into V1Pod & co, ApiException — is the client's own code.
"""

from __future__ import annotations

import copy
import io
import json
import os
import re
import socket
import subprocess
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import urllib3
from kubernetes.client import ApiClient, Configuration
from websocket import ABNF, WebSocketBadStatusException, WebSocketConnectionClosedException

SERVER = "https://k8s.test:6443"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any

    @property
    def line(self) -> str:
        """Method and path (query parameters in their order), as a journal line before any `#` note."""
        return f"{self.method} {self.path}" + (f"?{self.raw_query}" if self.raw_query else "")

    raw_query: str = ""


def status(code: int, message: str, reason: str) -> tuple[int, dict[str, Any]]:
    return code, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
                  "reason": reason, "code": code}


def pod(ns: str, name: str, node: str, ip: str, uid: str, containers: tuple[str, ...] = ("app",),
        labels: dict[str, str] | None = None, phase: str = "Running") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "uid": uid, "labels": labels or {}},
            "spec": {"nodeName": node, "containers": [{"name": c, "image": "app:1"} for c in containers]},
            "status": {"phase": phase, "podIP": ip, "hostIP": "192.0.2.1",
                       "containerStatuses": [{"name": c, "ready": True, "restartCount": 0, "image": "app:1",
                                              "imageID": "", "state": {"running": {}}} for c in containers]}}


def node(name: str, kernel: str, arch: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "status": {"nodeInfo": {"architecture": arch, "kernelVersion": kernel, "bootID": "",
                                    "containerRuntimeVersion": "containerd://1.7.0", "kubeProxyVersion": "",
                                    "kubeletVersion": "v1.31.0", "machineID": "", "operatingSystem": "linux",
                                    "osImage": "Debian GNU/Linux 12", "systemUUID": ""}}}


@dataclass
class FakeApiServer:
    """The object store and the answers; `fail[(method, path regex)] = status` injects an error."""

    pods: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)  # applied manifests by path
    requests: list[Request] = field(default_factory=list)
    fail: dict[tuple[str, str], int] = field(default_factory=dict)
    version: str = "v1.31.2"
    exec_handler: Any = None  # (path, query) -> ExecProcess
    exec_refuse: dict[str, int] = field(default_factory=dict)
    sessions: list[Any] = field(default_factory=list)
    # the kubelet's part for ephemeral containers: (pod, container) -> (state dict, log text); default running
    on_ephemeral: Any = None
    logs: dict[tuple[str, str, str], str] = field(default_factory=dict)

    def add_pod(self, p: dict[str, Any]) -> None:
        self.pods[(p["metadata"]["namespace"], p["metadata"]["name"])] = p

    def client(self) -> ApiClient:
        cfg = Configuration(host=SERVER)
        cfg.api_key = {"authorization": "Bearer test-token"}
        api = ApiClient(cfg)
        api.rest_client.pool_manager = self  # the lowest level of the REST path
        return api

    def lines(self) -> list[str]:
        return [r.line for r in self.requests]

    # urllib3.PoolManager's interface as RESTClientObject uses it
    def request(self, method: str, url: str, body: Any = None, fields: Any = None, headers: Any = None,
                timeout: Any = None, preload_content: bool = True, **_: Any) -> urllib3.HTTPResponse:
        parsed = urlparse(url)
        path = unquote(parsed.path)
        req = Request(method, path, parse_qs(parsed.query), dict(headers or {}),
                      json.loads(body) if body else None, raw_query=unquote(parsed.query))
        self.requests.append(req)
        code, answer = self._answer(req)
        text = isinstance(answer, str)  # pod logs are plain text
        data = answer.encode() if text else json.dumps(answer).encode()
        return urllib3.HTTPResponse(body=io.BytesIO(data), status=code, reason=_REASONS.get(code, "OK"),
                                    headers={"Content-Type": "text/plain" if text else "application/json"},
                                    preload_content=False)

    def clear(self) -> None:
        pass

    def _answer(self, req: Request) -> tuple[int, Any]:
        for (method, pattern), code in self.fail.items():
            if method == req.method and re.fullmatch(pattern, req.path):
                return status(code, f"injected {code} for {req.method} {req.path}", _REASONS.get(code, "Error"))
        m, path = req.method, req.path
        if path in ("/version", "/version/"):
            return 200, {"major": "1", "minor": "31", "gitVersion": self.version, "gitCommit": "", "gitTreeState": "",
                         "buildDate": "", "goVersion": "go1.22", "compiler": "gc", "platform": "linux/amd64"}
        if match := re.fullmatch(r"/api/v1/nodes/([^/]+)", path):
            if match[1] in self.nodes:
                return 200, self.nodes[match[1]]
            return status(404, f'nodes "{match[1]}" not found', "NotFound")
        if match := re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods", path):
            ns = match[1]
            if m == "GET":
                items = [p for (pns, _), p in self.pods.items() if pns == ns and _selected(p, req.query)]
                return 200, {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}
            if m == "POST":
                p = copy.deepcopy(req.body)
                key = (ns, p["metadata"]["name"])
                if key in self.pods:
                    return status(409, f'pods "{key[1]}" already exists', "AlreadyExists")
                p["metadata"].update(namespace=ns, uid=str(uuid.uuid4()))
                p["status"] = {"phase": "Running", "podIP": f"10.244.{len(self.pods) + 1}.9",
                               "containerStatuses": [{"name": c["name"], "ready": True, "restartCount": 0,
                                                      "image": c["image"], "imageID": "", "state": {"running": {}}}
                                                     for c in p["spec"]["containers"]]}
                self.pods[key] = p
                return 201, p
        if match := re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)(/[a-z]+)?", path):
            key, sub = (match[1], match[2]), match[3]
            if key not in self.pods:
                return status(404, f'pods "{key[1]}" not found', "NotFound")
            p = self.pods[key]
            if sub is None and m == "GET":
                return 200, p
            if sub is None and m == "DELETE":
                del self.pods[key]
                return 200, p
            if sub == "/ephemeralcontainers" and m == "PATCH":
                added = req.body["spec"]["ephemeralContainers"]
                p["spec"].setdefault("ephemeralContainers", []).extend(added)
                for c in added:
                    state, text = (self.on_ephemeral(p, c) if self.on_ephemeral else ({"running": {}}, ""))
                    self.logs[(key[0], key[1], c["name"])] = text
                    p["status"].setdefault("ephemeralContainerStatuses", []).append(
                        {"name": c["name"], "ready": False, "restartCount": 0, "image": c["image"], "imageID": "",
                         "state": state})
                return 200, p
            if sub == "/log" and m == "GET":
                return 200, self.logs.get((key[0], key[1], req.query.get("container", [""])[0]), "")
        if m == "PATCH" and req.headers.get("Content-Type") == "application/apply-patch+yaml":
            self.objects[path] = req.body
            return 200, req.body
        if m == "DELETE":
            if path in self.objects:
                return 200, self.objects.pop(path)
            return status(404, f"{path} not found", "NotFound")
        return status(404, f"no route for {m} {path}", "NotFound")


def _selected(p: dict[str, Any], query: dict[str, list[str]]) -> bool:
    for sel in query.get("fieldSelector", []):
        key, _, value = sel.partition("=")
        if key == "spec.nodeName" and p["spec"].get("nodeName") != value:
            return False
    for sel in query.get("labelSelector", []):
        for term in sel.split(","):
            key, _, value = term.partition("=")
            if p["metadata"].get("labels", {}).get(key) != value:
                return False
    return True


_REASONS = {200: "OK", 201: "Created", 403: "Forbidden", 404: "Not Found", 409: "Conflict", 500: "Internal Error"}


# -- the exec websocket ------------------------------------------------------------------------------------------


class _Frame:
    def __init__(self, data: bytes) -> None:
        self.data = data


class ExecProcess:
    """The far end of one exec session: a real process whose stdin/stdout/stderr the websocket carries, framed
    as the API server frames them (a channel byte, then the data; the exit status on channel 3; then close)."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=env, start_new_session=True)
        self.frames: list[tuple[int, bytes]] = []
        self.lock = threading.Condition()
        self.notify: Callable[[], None] = lambda: None
        self._readers = [threading.Thread(target=self._pump, args=(self.proc.stdout, 1), daemon=True),
                         threading.Thread(target=self._pump, args=(self.proc.stderr, 2), daemon=True)]
        for t in self._readers:
            t.start()
        threading.Thread(target=self._finish, daemon=True).start()

    def _push(self, opcode: int, data: bytes) -> None:
        with self.lock:  # one readiness byte per frame, written under the same lock as the frame
            self.frames.append((opcode, data))
            self.notify()

    def _pump(self, stream: Any, channel: int) -> None:
        for chunk in iter(lambda: os.read(stream.fileno(), 65536), b""):
            self._push(ABNF.OPCODE_BINARY, bytes([channel]) + chunk)

    def _finish(self) -> None:
        rc = self.proc.wait()
        for t in self._readers:
            t.join()
        if rc == 0:
            err = {"metadata": {}, "status": "Success"}
        else:
            err = {"metadata": {}, "status": "Failure", "message": "command terminated with non-zero exit code",
                   "reason": "NonZeroExitCode", "details": {"causes": [{"reason": "ExitCode", "message": str(rc)}]}}
        self._push(ABNF.OPCODE_BINARY, bytes([3]) + json.dumps(err).encode())
        self._push(ABNF.OPCODE_CLOSE, b"")

    def stdin(self, data: bytes) -> None:
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass

    def close_stdin(self) -> None:
        try:
            self.proc.stdin.close()
        except (BrokenPipeError, ValueError):
            pass


class FakeWebSocket:
    """Stands in for websocket-client's WebSocket inside kubernetes.stream (ws_client.WebSocket): the
    connection to the API server's exec endpoint. `server.exec_handler(path, query)` decides what runs, or
    `server.exec_refuse[path regex] = status` refuses the upgrade as the API server would (403, 404)."""

    server: FakeApiServer  # set by install_exec

    def __init__(self, sslopt: Any = None, skip_utf8_validation: bool = False) -> None:
        self._r, self._w = socket.socketpair()
        self.sock = self._r  # ws_client polls this for readiness
        self.connected = False
        self.subprotocol: str | None = None
        self.process: ExecProcess | None = None
        self.frames_read = 0
        self.break_after: int | None = None  # test: drop the connection after this many frames were read

    def connect(self, url: str, header: list[str] | None = None, **_: Any) -> None:
        parsed = urlparse(url)
        path, query = unquote(parsed.path), parse_qs(parsed.query)
        self.server.requests.append(Request("GET", path, query, dict(h.split(": ", 1) for h in header or []), None,
                                            raw_query=unquote(parsed.query)))
        for pattern, code in self.server.exec_refuse.items():
            if re.fullmatch(pattern, path):
                raise _bad_status(code, f"injected {code} for exec")
        match = re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)/exec", path)
        if not match or (match[1], match[2]) not in self.server.pods:
            raise _bad_status(404, f"pods {path.split('/')[-2]!r} not found")
        self.command = query.get("command", [])
        self.process = self.server.exec_handler(path, query)
        with self.process.lock:
            self.process.notify = lambda: self._w.send(b"x")
            self._w.send(b"x" * len(self.process.frames))
        self.server.sessions.append(self)
        self.connected = True
        self.subprotocol = "v5.channel.k8s.io"

    def getheaders(self) -> dict[str, str]:
        return {"sec-websocket-protocol": self.subprotocol or ""}

    def recv_data_frame(self, control_frame: bool = True) -> tuple[int, _Frame]:
        assert self.process is not None
        with self.process.lock:
            opcode, data = self.process.frames.pop(0)
        self._r.recv(1)
        self.frames_read += 1
        if self.break_after is not None and self.frames_read > self.break_after:
            self.connected = False
            raise WebSocketConnectionClosedException("Connection to remote host was lost.")
        if opcode == ABNF.OPCODE_CLOSE:
            self.connected = False
        return opcode, _Frame(data)

    def send(self, payload: Any, opcode: int = ABNF.OPCODE_TEXT) -> None:
        assert self.process is not None
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        if data[0] == 255 and data[1:] == b"\x00":  # v5: close stdin
            self.process.close_stdin()
        elif data[0] == 0:
            self.process.stdin(data[1:])

    def close(self, **_: Any) -> None:
        """The client hung up: the exec session ends and the runtime closes the process's stdin (it is not
        killed: a process that ignores EOF keeps running, as on a real node)."""
        if self.process is not None:
            self.process.close_stdin()
        self.connected = False


def _bad_status(code: int, message: str) -> WebSocketBadStatusException:
    """The handshake refusal as websocket-client raises it (its message format, the Status body)."""
    headers = {"content-type": "application/json"}
    body = json.dumps(status(code, message, _REASONS.get(code, "Error"))[1]).encode()
    return WebSocketBadStatusException(
        f"Handshake status {code} {_REASONS.get(code)} -+-+- {headers} -+-+- {body.decode()}", code,
        _REASONS.get(code), headers, body)


def install_exec(server: FakeApiServer, monkeypatch: Any) -> None:
    from kubernetes.stream import ws_client

    cls = type("BoundFakeWebSocket", (FakeWebSocket,), {"server": server})
    monkeypatch.setattr(ws_client, "WebSocket", cls)
