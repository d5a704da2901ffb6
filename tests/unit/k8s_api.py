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
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import urllib3
from kubernetes.client import ApiClient, Configuration

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
    ephemeral_state: str = "running"  # what a new ephemeral container's status says: running | terminated

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
        if path == "/version":
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
                p["metadata"].update(namespace=ns, uid=f"uid-{key[1]}")
                p["status"] = {"phase": "Running", "podIP": f"10.244.{len(self.pods) + 1}.9"}
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
                state = {"running": {}} if self.ephemeral_state == "running" else {"terminated": {"exitCode": 0}}
                p["status"].setdefault("ephemeralContainerStatuses", []).extend(
                    {"name": c["name"], "ready": False, "restartCount": 0, "image": c["image"], "imageID": "",
                     "state": state} for c in added)
                return 200, p
            if sub == "/log" and m == "GET":
                return 200, p.get("logs", {}).get(req.query.get("container", [""])[0], "")
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
