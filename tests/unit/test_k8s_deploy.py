# SPDX-License-Identifier: Apache-2.0
"""`cniprof k8s deploy|undeploy` through the real kubernetes client, the HTTP transport replaced below it
(tests/unit/k8s_api.py): what goes on the wire, and how 403/404/unreachable answers reach the user."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from k8s_api import SERVER, FakeApiServer
from kubernetes.client import rest

from cniprof.cli.main import main
from cniprof.k8s import manifests

KINDS_PATHS = [
    "/api/v1/namespaces/prof",
    "/api/v1/namespaces/prof/serviceaccounts/cniprof-agent",
    "/apis/rbac.authorization.k8s.io/v1/clusterroles/cniprof-tracer",
    "/apis/rbac.authorization.k8s.io/v1/namespaces/prof/roles/cniprof-tracer",
    "/apis/apps/v1/namespaces/prof/daemonsets/cniprof-agent",
]


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": SERVER, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "me", "user": {"token": "test-token"}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "me"}}]}))
    return path


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> FakeApiServer:
    fake = FakeApiServer()
    monkeypatch.setattr(rest.urllib3, "PoolManager", lambda **_: fake)  # what RESTClientObject builds
    return fake


def test_deploy_applies_every_object_server_side(kubeconfig: Path, server: FakeApiServer,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["k8s", "deploy", "--kubeconfig", str(kubeconfig), "--namespace", "prof",
                 "--image", "registry.test/cniprof:1"]) == 0
    assert [r.path for r in server.requests] == KINDS_PATHS
    for r in server.requests:
        assert r.method == "PATCH"
        assert r.headers["Content-Type"] == "application/apply-patch+yaml"
        assert r.query == {"fieldManager": ["cniprof"], "force": ["true"]}
        assert r.headers["authorization"] == "Bearer test-token"
    sent = [r.body for r in server.requests]
    assert sent == [manifests.to_dict(o) for o in manifests.objects("prof", "registry.test/cniprof:1")]
    assert "applied DaemonSet prof/cniprof-agent" in capsys.readouterr().out
    # applying again is the same requests (idempotent), no 409 to handle
    assert main(["k8s", "deploy", "--kubeconfig", str(kubeconfig), "--namespace", "prof",
                 "--image", "registry.test/cniprof:1"]) == 0
    assert len(server.requests) == 2 * len(KINDS_PATHS)


def test_dry_run_prints_the_same_calls_and_sends_nothing(kubeconfig: Path, server: FakeApiServer,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["k8s", "deploy", "--dry-run", "--namespace", "prof"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert server.requests == []
    assert main(["k8s", "deploy", "--kubeconfig", str(kubeconfig), "--namespace", "prof"]) == 0
    capsys.readouterr()
    assert [line.split("  #")[0] for line in printed] == server.lines()


def test_undeploy_deletes_in_reverse_and_tolerates_absent(kubeconfig: Path, server: FakeApiServer,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["k8s", "deploy", "--kubeconfig", str(kubeconfig), "--namespace", "prof"]) == 0
    del server.objects["/apis/rbac.authorization.k8s.io/v1/clusterroles/cniprof-tracer"]  # removed by hand
    capsys.readouterr()
    assert main(["k8s", "undeploy", "--kubeconfig", str(kubeconfig), "--namespace", "prof"]) == 0
    deletes = [r for r in server.requests if r.method == "DELETE"]
    assert [r.path for r in deletes] == list(reversed(KINDS_PATHS))
    assert server.objects == {}
    out = capsys.readouterr().out
    assert "already absent: ClusterRole cniprof-tracer" in out and "deleted Namespace prof" in out


def test_forbidden_is_one_line_and_exit_3(kubeconfig: Path, server: FakeApiServer,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    server.fail[("PATCH", r"/apis/rbac.authorization.k8s.io/v1/clusterroles/.*")] = 403
    assert main(["k8s", "deploy", "--kubeconfig", str(kubeconfig), "--namespace", "prof"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "applying ClusterRole cniprof-tracer: forbidden by the API server (injected 403" in err
    # it stopped there: the objects after the refused one were not sent
    assert [r.path for r in server.requests] == KINDS_PATHS[:3]


def test_unreachable_server_is_an_environment_problem(kubeconfig: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    class Refusing:
        def request(self, *_a: object, **_k: object) -> None:
            raise rest.urllib3.exceptions.MaxRetryError(None, SERVER, "connection refused")  # type: ignore[arg-type]

        def clear(self) -> None:
            pass

    monkeypatch.setattr(rest.urllib3, "PoolManager", lambda **_: Refusing())
    assert main(["k8s", "undeploy", "--kubeconfig", str(kubeconfig)]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot reach the API server at {SERVER}" in err


def test_missing_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert main(["k8s", "deploy", "--kubeconfig", str(tmp_path / "none")]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no usable kubeconfig" in err and "--kubeconfig" in err
