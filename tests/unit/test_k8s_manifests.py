# SPDX-License-Identifier: Apache-2.0
"""The agent manifests: validated offline against every Kubernetes minor version's schemas from 1.27 on, and
the privileges they grant checked one by one (nothing more than PRIVILEGES lists)."""

from __future__ import annotations

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as kv_utils

from cniprof.cli.main import main
from cniprof.k8s import manifests

VERSIONS = sorted({v for v in kv_utils.all_versions() if tuple(map(int, v.split(".")[:2])) >= (1, 27)},
                  key=lambda v: tuple(map(int, v.split("."))))


def test_versions_cover_1_27_to_newest_known() -> None:
    assert VERSIONS[0] == "1.27.0"
    assert VERSIONS[-1] == kv_utils.latest_version()
    assert len(VERSIONS) >= 11  # 1.27 ... 1.37 with kubernetes-validate 1.37


@pytest.mark.parametrize("version", VERSIONS)
def test_manifests_validate_strictly(version: str) -> None:
    docs = [manifests.to_dict(o) for o in manifests.objects("prof", "registry.test/cniprof:1")]
    assert [d["kind"] for d in docs] == ["Namespace", "ServiceAccount", "ClusterRole", "Role", "DaemonSet"]
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)  # raises ValidationError on any defect


def test_a_broken_manifest_is_refused() -> None:
    """The validator is not a no-op: an unknown field and a wrong type are both caught."""
    ds = manifests.to_dict(manifests.daemon_set("prof", "img"))
    ds["spec"]["template"]["spec"]["hostPIDD"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, VERSIONS[-1], strict=True)
    ds = manifests.to_dict(manifests.daemon_set("prof", "img"))
    ds["spec"]["template"]["spec"]["hostPID"] = "yes"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, VERSIONS[-1], strict=True)


def test_agent_pod_privileges_are_exactly_the_listed_ones() -> None:
    ds = manifests.to_dict(manifests.daemon_set("prof", "img"))
    pod = ds["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["capabilities"] == {"add": ["BPF", "PERFMON", "NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE"], "drop": ["ALL"]}
    assert set(sc["capabilities"]["add"]) <= set(manifests.PRIVILEGES)
    assert sc["privileged"] is False and sc["readOnlyRootFilesystem"] is True
    assert pod["hostPID"] is True and pod["hostNetwork"] is True
    assert "hostIPC" not in pod
    assert "ports" not in c  # the agent opens no port
    assert pod["automountServiceAccountToken"] is False
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert all(m["readOnly"] for p, m in mounts.items() if p != "/tmp")
    host_paths = sorted(v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v)
    assert host_paths == ["/etc/cni/net.d", "/proc", "/run/flannel", "/run/netns", "/sys/kernel/btf"]
    assert mounts["/run/netns"]["mountPropagation"] == "HostToContainer"
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    arch = next(e for e in terms[0]["matchExpressions"] if e["key"] == "kubernetes.io/arch")
    assert arch["values"] == ["amd64", "arm64"]
    assert pod["tolerations"] == [{"operator": "Exists"}]
    assert c["command"] == ["sleep", "infinity"]  # it waits; sessions are exec'd


def test_rbac_grants_no_writes_beyond_tracing() -> None:
    cluster_rules = manifests.to_dict(manifests.tracer_cluster_role())["rules"]
    granted = {(r, v) for rule in cluster_rules for r in rule["resources"] for v in rule["verbs"]}
    assert granted == {("pods", "get"), ("pods", "list"), ("pods/ephemeralcontainers", "patch"),
                       ("pods/log", "get"), ("pods/exec", "get"), ("pods/exec", "create"), ("nodes", "get"),
                       ("nodes", "list")}
    role = manifests.to_dict(manifests.tracer_role("prof"))
    assert role["metadata"]["namespace"] == "prof"
    assert all("*" not in rule["verbs"] and "*" not in rule["resources"] for rule in cluster_rules + role["rules"])
    sa = manifests.to_dict(manifests.service_account("prof"))
    assert sa["automountServiceAccountToken"] is False


def test_manifest_command_prints_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["k8s", "manifest", "--image", "registry.test/cniprof:2", "--namespace", "prof"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["kind"] for d in docs] == ["Namespace", "ServiceAccount", "ClusterRole", "Role", "DaemonSet"]
    assert docs[0]["metadata"]["name"] == "prof"
    assert docs[-1]["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.test/cniprof:2"
    for doc in docs:
        kubernetes_validate.validate(doc, VERSIONS[-1], strict=True)
