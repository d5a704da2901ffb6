# SPDX-License-Identifier: Apache-2.0
"""One connection to a cluster's API server, and every API call cniprof makes through it.

Each method of `Cluster` is exactly one API request (or one exec stream) and writes one line to the journal
(`Cluster.calls`: "VERB /path?query", the request as the API server sees it). `--dry-run` uses `DryRun`, which
prints the same lines instead of sending anything and answers with placeholders ("<node of ns/pod>") so the run
can go on to show the calls that depend on them. The tests compare a real run's HTTP requests (transport
replaced below urllib3 and the websocket) with its journal, line by line.

API errors become the project's errors here: 403 names the RBAC role to bind, 404 the object that is missing,
an unreachable server the address tried; nothing above this module sees an ApiException.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, unquote, urlencode

import lazy_loader
import urllib3
import yaml

from cniprof.errors import CniprofError, EnvironmentProblem

if TYPE_CHECKING:
    import kubernetes
    from kubernetes.client import ApiClient
    from kubernetes.client.exceptions import ApiException
else:  # imported on first use: `trace` without --k8s never waits for the kubernetes client (~0.5 s)
    kubernetes = lazy_loader.load("kubernetes")

log = logging.getLogger(__name__)
T = TypeVar("T")
APPLY = "application/apply-patch+yaml"  # server-side apply: create or update in one idempotent request
FIELD_MANAGER = "cniprof"


class ApiRefused(CniprofError):
    """The API server answered with an error status (kept for callers that tolerate one, e.g. 404 on delete)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status
        self.exit_code = 2 if status == 404 else 3


def connect(kubeconfig: str | None = None, context: str | None = None) -> ApiClient:
    """An API client from a kubeconfig (default: $KUBECONFIG or ~/.kube/config), or the in-cluster service
    account when no kubeconfig exists and cniprof runs in a pod."""
    try:
        return kubernetes.config.new_client_from_config(config_file=kubeconfig, context=context)
    # the client's loader lets a file that is not a kubeconfig through as whatever it tripped on (not YAML, a
    # list, a directory, a bad field): all of them mean "no usable kubeconfig"
    except (kubernetes.config.ConfigException, OSError, yaml.YAMLError, ValueError, TypeError,
            KeyError, AttributeError) as e:
        if kubeconfig is None and context is None:
            try:
                kubernetes.config.load_incluster_config()
                return kubernetes.client.ApiClient()
            except kubernetes.config.ConfigException:
                pass
        where = kubeconfig or "$KUBECONFIG or ~/.kube/config"
        why = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise EnvironmentProblem(f"no usable kubeconfig ({where}: {why}): pass "
                                 "--kubeconfig FILE [--context NAME]") from None


def _reason(e: ApiException) -> str:
    try:
        return str(json.loads(e.body or "")["message"])
    except (ValueError, KeyError, TypeError):
        return str(e.reason or "").strip() or f"HTTP {e.status}"


class Cluster:
    """The typed APIs of one ApiClient, one journal line per request."""

    dry_run = False

    def __init__(self, api: ApiClient | None) -> None:
        self.api = api or kubernetes.client.ApiClient()
        self.core = kubernetes.client.CoreV1Api(self.api)
        self.apps = kubernetes.client.AppsV1Api(self.api)
        self.rbac = kubernetes.client.RbacAuthorizationV1Api(self.api)
        self.calls: list[str] = []

    @property
    def server(self) -> str:
        return str(self.api.configuration.host)

    def _request(self, verb: str, path: str, what: str, send: Callable[[], T], dry: Callable[[], T],
                 query: dict[str, Any] | None = None, note: str = "") -> T:
        """Journal one request, then send it (DryRun: answer `dry()` instead)."""
        line = f"{verb} {path}" + (f"?{unquote(urlencode(query, doseq=True, quote_via=quote))}" if query else "") + (f"  # {note}" if note else "")
        self.calls.append(line)
        log.info("k8s: %s", line)
        try:
            return send()
        except kubernetes.client.ApiException as e:
            raise self.refused(what, e) from None
        except urllib3.exceptions.HTTPError as e:  # connection refused, DNS, TLS, timeouts: below the API
            raise EnvironmentProblem(f"{what}: cannot reach the API server at {self.server} "
                                     f"({getattr(e, 'reason', None) or e})") from None

    def refused(self, what: str, e: ApiException) -> CniprofError:
        status = int(e.status or 0)
        reason = _reason(e)
        # an exec refused at the websocket upgrade comes as status 0 with websocket-client's message:
        # "Handshake status 403 Forbidden -+-+- {headers} -+-+- {Status body}"
        handshake = re.match(r"Handshake status (\d+) [^-]*-\+-\+- .*? -\+-\+- (.*)$", reason, re.DOTALL)
        if status == 0 and handshake:
            status = int(handshake[1])
            try:
                reason = str(json.loads(handshake[2])["message"])
            except (ValueError, KeyError, TypeError):
                reason = f"HTTP {status}"
        if status == 0:
            return EnvironmentProblem(f"{what}: cannot reach the API server at {self.server} ({reason})")
        if status in (401, 403):
            return ApiRefused(f"{what}: forbidden by the API server ({reason}): bind the cniprof-tracer "
                              "ClusterRole and Role (cniprof k8s manifest) to your user", status)
        if status == 404:
            return ApiRefused(f"{what}: not found ({reason})", 404)
        return ApiRefused(f"{what}: the API server answered {status} ({reason})", status)

    # -- reads ------------------------------------------------------------------------------------------------
    def version(self) -> dict[str, str]:
        def send() -> dict[str, str]:
            info = kubernetes.client.VersionApi(self.api).get_code()
            return {"git_version": info.git_version, "platform": info.platform}

        return self._request("GET", "/version/", "reading the server version", send,
                             lambda: {"git_version": "<server version>", "platform": "<platform>"})

    def read_pod(self, namespace: str, name: str) -> kubernetes.client.V1Pod:
        ref = f"{namespace}/{name}"
        placeholder = kubernetes.client.V1Pod(
            metadata=kubernetes.client.V1ObjectMeta(name=name, namespace=namespace, uid=f"<uid of {ref}>"),
            spec=kubernetes.client.V1PodSpec(node_name=f"<node of {ref}>",
                                  containers=[kubernetes.client.V1Container(name=f"<containers of {ref}>")]),
            status=kubernetes.client.V1PodStatus(phase="Running", pod_ip=f"<ip of {ref}>"))
        return self._request("GET", f"/api/v1/namespaces/{namespace}/pods/{name}", f"pod {ref}",
                             lambda: self.core.read_namespaced_pod(name, namespace), lambda: placeholder)

    def pods_on_node(self, namespace: str, selector: str, node: str) -> list[kubernetes.client.V1Pod]:
        query = {"fieldSelector": f"spec.nodeName={node}", "labelSelector": selector}
        placeholder = [kubernetes.client.V1Pod(
            metadata=kubernetes.client.V1ObjectMeta(name=f"<agent pod on {node}>", namespace=namespace),
            spec=kubernetes.client.V1PodSpec(node_name=node, containers=[]), status=kubernetes.client.V1PodStatus(phase="Running"))]
        return self._request(
            "GET", f"/api/v1/namespaces/{namespace}/pods", f"pods {selector} on node {node} in {namespace}",
            lambda: list(self.core.list_namespaced_pod(namespace, field_selector=query["fieldSelector"],
                                                       label_selector=selector).items),
            lambda: placeholder, query)

    def read_node(self, name: str) -> kubernetes.client.V1Node:
        placeholder = kubernetes.client.V1Node(metadata=kubernetes.client.V1ObjectMeta(name=name), status=kubernetes.client.V1NodeStatus(
            node_info=kubernetes.client.V1NodeSystemInfo(
                architecture=f"<arch of {name}>", kernel_version=f"<kernel of {name}>", boot_id="",
                container_runtime_version="<runtime>", kube_proxy_version="", kubelet_version="<kubelet>",
                machine_id="", operating_system="linux", os_image="<os>", system_uuid="")))
        return self._request("GET", f"/api/v1/nodes/{name}", f"node {name}", lambda: self.core.read_node(name),
                             lambda: placeholder)

    def read_log(self, namespace: str, pod: str, container: str) -> str:
        return self._request(
            "GET", f"/api/v1/namespaces/{namespace}/pods/{pod}/log", f"log of {namespace}/{pod} ({container})",
            lambda: str(self.core.read_namespaced_pod_log(pod, namespace, container=container)), lambda: "",
            {"container": container})

    # -- writes -----------------------------------------------------------------------------------------------
    def apply(self, obj: Any) -> None:
        """Server-side apply of one manifest object (create, or update what cniprof owns)."""
        kind, name = obj.kind, obj.metadata.name
        path, call = self._endpoint(kind, name, obj.metadata.namespace)
        self._request("PATCH", path, f"applying {kind} {name}",
                      lambda: call("patch")(body=self.api.sanitize_for_serialization(obj),
                                            field_manager=FIELD_MANAGER, force=True, _content_type=APPLY),
                      lambda: None, {"fieldManager": FIELD_MANAGER, "force": "true"}, note="server-side apply")

    def delete(self, kind: str, name: str, namespace: str | None = None) -> bool:
        """Delete one object; False when it was already gone (404)."""
        path, call = self._endpoint(kind, name, namespace)
        try:
            self._request("DELETE", path, f"deleting {kind} {name}", lambda: call("delete")(), lambda: None)
        except ApiRefused as e:
            if e.status == 404:
                return False
            raise
        return True

    def _endpoint(self, kind: str, name: str, ns: str | None) -> tuple[str, Callable[[str], Callable[..., Any]]]:
        table: dict[str, tuple[str, Any, str, bool]] = {
            "Namespace": ("/api/v1/namespaces/{name}", self.core, "namespace", False),
            "ServiceAccount": ("/api/v1/namespaces/{ns}/serviceaccounts/{name}", self.core,
                               "namespaced_service_account", True),
            "Pod": ("/api/v1/namespaces/{ns}/pods/{name}", self.core, "namespaced_pod", True),
            "ClusterRole": ("/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}", self.rbac, "cluster_role",
                            False),
            "Role": ("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles/{name}", self.rbac,
                     "namespaced_role", True),
            "DaemonSet": ("/apis/apps/v1/namespaces/{ns}/daemonsets/{name}", self.apps, "namespaced_daemon_set",
                          True),
        }
        template, api, suffix, namespaced = table[kind]

        def call(verb: str) -> Callable[..., Any]:
            method = getattr(api, f"{verb}_{suffix}")
            return (lambda **kw: method(name, ns, **kw)) if namespaced else (lambda **kw: method(name, **kw))

        return template.format(name=name, ns=ns), call

    def create_pod(self, namespace: str, pod: kubernetes.client.V1Pod) -> kubernetes.client.V1Pod:
        return self._request("POST", f"/api/v1/namespaces/{namespace}/pods",
                             f"creating pod {namespace}/{pod.metadata.name}",
                             lambda: self.core.create_namespaced_pod(namespace, pod), lambda: pod,
                             note=f"pod {pod.metadata.name}")

    def add_ephemeral_container(self, pod: kubernetes.client.V1Pod, container: kubernetes.client.V1EphemeralContainer) -> None:
        """Add one ephemeral container to a running pod (strategic merge patch of the subresource: the
        containers already there are kept)."""
        ns, name = pod.metadata.namespace, pod.metadata.name
        body = {"spec": {"ephemeralContainers": [self.api.sanitize_for_serialization(container)]}}
        self._request("PATCH", f"/api/v1/namespaces/{ns}/pods/{name}/ephemeralcontainers",
                      f"adding ephemeral container {container.name} to {ns}/{name}",
                      lambda: self.core.patch_namespaced_pod_ephemeralcontainers(
                          name, ns, body, _content_type="application/strategic-merge-patch+json"),
                      lambda: None, note=f"ephemeral container {container.name}")

    def exec_stream(self, namespace: str, pod: str, container: str, command: list[str], stdin: bool) -> Any:
        """An exec session (websocket; stdout and stderr, stdin when asked); returns the open WSClient
        (None in a dry run)."""
        query = {"command": command, "container": container, "stderr": "true", "stdin": str(stdin).lower(),
                 "stdout": "true", "tty": "false"}
        return self._request(
            "GET", f"/api/v1/namespaces/{namespace}/pods/{pod}/exec",
            f"exec {' '.join(command)} in {namespace}/{pod} ({container})",
            lambda: kubernetes.stream.stream(self.core.connect_get_namespaced_pod_exec, pod, namespace, command=command,
                           container=container, stderr=True, stdin=stdin, stdout=True, tty=False,
                           _preload_content=False),
            lambda: None, query, note="websocket exec")


class DryRun(Cluster):
    """The same calls, printed instead of sent; reads answer with placeholders that name what they stand for."""

    dry_run = True

    def __init__(self, api: ApiClient | None = None, out: IO[str] | None = None) -> None:
        super().__init__(api)
        self.out = out or sys.stdout

    def _request(self, verb: str, path: str, what: str, send: Callable[[], T], dry: Callable[[], T],
                 query: dict[str, Any] | None = None, note: str = "") -> T:
        super()._request(verb, path, what, lambda: None, dry, query, note)
        print(self.calls[-1], file=self.out, flush=True)
        return dry()
