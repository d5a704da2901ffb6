# SPDX-License-Identifier: Apache-2.0
"""A cluster run on the lab, with only the HTTP hop simulated: the lab's pods are the cluster's pods (their
processes in kubelet-named cgroups, tests/root/fake_kubelet.py), the API server's answers come from the
in-memory store of tests/unit/k8s_api.py under the real kubernetes client, and every exec and ephemeral
container is a real process on this machine: `cniprof k8s pod-netns` and `cniprof k8s detect` as the agent pod
would run them, and the generators inside the pods' own namespaces (what an ephemeral container's shared network
namespace gives), so real iperf3 traffic crosses the lab's flannel datapath."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from fake_kubelet import FakeKubelet, hierarchies, layouts
from kubernetes.client import rest

from cniprof.cli.main import main
from cniprof.cni.topology import Topology
from cniprof.k8s.cluster import Cluster
from cniprof.k8s.session import ClusterOptions, ClusterRun

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from k8s_api import SERVER, ExecProcess, FakeApiServer, install_exec, node, pod

pytestmark = pytest.mark.root
AGENT = {"app.kubernetes.io/name": "cniprof-agent", "app.kubernetes.io/part-of": "cniprof"}


class LabCluster(FakeApiServer):
    """The lab as a cluster: ephemeral containers are processes in their pod's lab namespace, their status and
    log read from the process."""

    def __init__(self, topo: Topology) -> None:
        super().__init__()
        self.topo = topo
        self.netns_of: dict[tuple[str, str], str] = {}
        self.containers: dict[tuple[str, str, str], tuple[subprocess.Popen, list[bytes]]] = {}
        self.on_ephemeral = self._start

    def _start(self, p: dict[str, Any], c: dict[str, Any]) -> tuple[dict[str, Any], str]:
        key = (p["metadata"]["namespace"], p["metadata"]["name"])
        proc = subprocess.Popen(["ip", "netns", "exec", self.netns_of[key], *c["command"]],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out: list[bytes] = []
        threading.Thread(target=lambda: out.extend(iter(lambda: proc.stdout.read(4096), b"")), daemon=True).start()
        self.containers[(*key, c["name"])] = (proc, out)
        return {"running": {}}, ""

    def _answer(self, req: Any) -> tuple[int, Any]:
        for (ns, name, cname), (proc, out) in self.containers.items():  # the kubelet's view, refreshed
            rc = proc.poll()
            if (ns, name) in self.pods:
                for st in self.pods[(ns, name)]["status"].get("ephemeralContainerStatuses", []):
                    if st["name"] == cname and rc is not None:
                        st["state"] = {"terminated": {"exitCode": rc}}
            if rc is not None:
                self.logs[(ns, name, cname)] = b"".join(out).decode()
        return super()._answer(req)

    def close(self) -> None:
        for proc, _ in self.containers.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def lab_cluster(lab: Topology, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[LabCluster, dict[str, str]]]:
    """Two lab pods on two nodes as ns/pod names, their processes in kubelet cgroups, an agent pod per node."""
    kubelet = FakeKubelet()
    server = LabCluster(lab)
    names = {}
    try:
        (_, mount) = hierarchies()[0]
        a = next(p for p in lab.pods if p.node == lab.nodes[0].name)
        b = next(p for p in lab.pods if p.node == lab.nodes[1].name)
        for i, lp in enumerate((a, b)):
            uid = str(uuid.uuid4())
            kubelet.start_in(lp.netns, mount, layouts(uid, uuid.uuid4().hex * 2)["systemd-containerd-burstable"])
            ref = ("default", f"{lp.name}-{i}")
            server.add_pod(pod(*ref, lp.node, lp.ip, uid))
            server.netns_of[ref] = lp.netns
            names[lp.name] = "/".join(ref)
        for n in lab.nodes:
            server.nodes[n.name] = node(n.name, "6.1.0-lab", "amd64")
            server.add_pod(pod("cniprof", f"agent-{n.name}", n.name, "192.0.2.9", str(uuid.uuid4()), ("agent",),
                               labels=AGENT))

        def exec_handler(path: str, query: dict[str, list[str]]) -> ExecProcess:
            argv = query["command"]
            container = query["container"][0]
            if argv[:2] == ["cniprof", "k8s"]:  # what the agent container runs, in its node's namespace
                args = [a if a != "/host/proc" else "/proc" for a in argv[2:]]  # (hostNetwork, hostPID)
                node_netns = next(n.netns for n in lab.nodes if path.split("/")[6] == f"agent-{n.name}")
                return ExecProcess(["ip", "netns", "exec", node_netns, sys.executable, "-m", "cniprof", "k8s", *args])
            if argv[:2] == ["cniprof", "agent"]:  # the agent, in its node's namespace, this lab's id
                node_netns = next(n.netns for n in lab.nodes if path.split("/")[6] == f"agent-{n.name}")
                return ExecProcess(["ip", "netns", "exec", node_netns, sys.executable, "-m", "cniprof", *argv[1:]],
                                   env=dict(os.environ))
            if argv[:2] == ["kill", "-TERM"]:  # PID 1 of that ephemeral container: its timeout
                ns, name = path.split("/")[4], path.split("/")[6]
                proc, _ = server.containers[(ns, name, container)]
                return ExecProcess(["kill", "-TERM", str(proc.pid)])
            raise AssertionError(f"unexpected exec {argv}")

        server.exec_handler = exec_handler
        install_exec(server, monkeypatch)
        yield server, names
    finally:
        server.close()
        for s in server.sessions:
            if s.process.proc.poll() is None:
                s.process.proc.kill()
            s.process.proc.wait(timeout=10)
        kubelet.close()


def test_cluster_run_on_the_lab(lab: Topology, lab_cluster: tuple[LabCluster, dict[str, str]]) -> None:
    server, names = lab_cluster
    src, dst = (names[p.name] for p in (next(p for p in lab.pods if p.node == lab.nodes[0].name),
                                        next(p for p in lab.pods if p.node == lab.nodes[1].name)))
    opts = ClusterOptions(src=src, dst=dst, traffic="iperf3", duration_s=2)
    with ExitStack() as stack:
        run = ClusterRun(Cluster(server.client()), opts, stack)
        facts = run.resolve()
        netns = run.pod_namespaces()
        cni = run.detect_cni()
        run.start_traffic()
        traffic = run.traffic_result()
    # the nodes' own answers: each pod's namespace (by its process in the pod's cgroup), the lab's CNI
    for ref, path in netns.items():
        lab_pod = server.netns_of[tuple(ref.split("/"))]  # type: ignore[index]
        assert Path(path).stat().st_ino == Path(f"/run/netns/{lab_pod}").stat().st_ino
    assert {n: (d["cni"], d["mode"]) for n, d in cni.items()} == {n.name: ("flannel", "vxlan") for n in lab.nodes}
    assert run.cni_spec() == "flannel:vxlan"
    # real iperf3 from the source pod's namespace to the destination pod's IP, through the lab's datapath
    assert traffic["generator"] == "iperf3" and traffic["throughput_bps"] > 1e6 and traffic["bytes"] > 0
    assert facts.summary()["generators"][0]["role"] == "server"
    # nothing left running; iperf3's server (-1) ended after its one test, so no stop was needed
    assert all(proc.poll() is not None for proc, _ in server.containers.values())
    assert not any("command=kill" in line for line in server.lines())


def test_interrupted_run_stops_the_generator_in_the_pod(lab: Topology,
                                                        lab_cluster: tuple[LabCluster, dict[str, str]]) -> None:
    server, names = lab_cluster
    src, dst = (names[p.name] for p in (next(p for p in lab.pods if p.node == lab.nodes[0].name),
                                        next(p for p in lab.pods if p.node == lab.nodes[1].name)))
    opts = ClusterOptions(src=src, dst=dst, traffic="ping", count=500, duration_s=100)
    with pytest.raises(KeyboardInterrupt), ExitStack() as stack:
        run = ClusterRun(Cluster(server.client()), opts, stack)
        run.resolve()
        (gen,) = run.start_traffic()
        (proc, _), = server.containers.values()
        assert proc.poll() is None  # ping runs in the source pod's namespace (500 pings: 100 s)
        raise KeyboardInterrupt
    assert proc.wait(timeout=10) is not None  # stopped by the exec'd `kill -TERM 1`, not by its 160 s timeout
    assert next(line for line in server.lines() if "command=kill" in line).endswith(
        f"container={gen.container}&stderr=true&stdin=false&stdout=true&tty=false")


def _through(server: LabCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A kubeconfig for the simulated API server, whose HTTP the client's pool now sends to `server`."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "lab",
        "clusters": [{"name": "lab", "cluster": {"server": SERVER, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "me", "user": {"token": "test-token"}}],
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "me"}}]}))
    monkeypatch.setattr(rest.urllib3, "PoolManager", lambda **_: server)
    return kubeconfig


def _cross_node_pair(lab: Topology, names: dict[str, str]) -> tuple[str, str]:
    """NS/POD of the first pod on each of the lab's two nodes."""
    first = [next(p for p in lab.pods if p.node == node.name) for node in lab.nodes[:2]]
    return names[first[0].name], names[first[1].name]


def test_trace_k8s_end_to_end_on_the_lab(lab: Topology, lab_cluster: tuple[LabCluster, dict[str, str]],
                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`cniprof trace --k8s` from the command line to merged tables and files: the real client (transport
    replaced below it), a real `cniprof agent` per lab node started by the exec stream inside that node's
    namespace (as hostNetwork gives it in a DaemonSet pod), real ping between the pods' namespaces."""
    server, names = lab_cluster
    kubeconfig = _through(server, tmp_path, monkeypatch)
    src, dst = _cross_node_pair(lab, names)
    out = tmp_path / "run"
    rc = main(["trace", "--k8s", "--kubeconfig", str(kubeconfig), "--src", src, "--dst", dst, "--traffic", "ping",
               "--count", "20", "--duration", "5", "--sample", "1", "--no-ui", "--export", str(out)])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    cluster = summary["cluster"]
    assert cluster["server_version"] == server.version
    assert sorted(cluster["nodes"]) == sorted(n.name for n in lab.nodes)
    assert all(n["cni"]["cni"] == "flannel" for n in cluster["nodes"].values())
    assert summary["clock"]["status"] == "ok"
    assert summary["generator"]["received"] == 20
    hops = (out / "hops.csv").read_text()
    assert src in hops and dst in hops  # rows name the pods as NS/POD
    assert all(n.name in hops for n in lab.nodes)
    assert not any(s.process.proc.poll() is None for s in server.sessions)  # every agent stopped


def test_trace_k8s_lost_connection(lab: Topology, lab_cluster: tuple[LabCluster, dict[str, str]], tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """One agent's exec stream drops mid-run: the run finishes with what arrived, names the node, exits 3, and
    the agent whose stream dropped stops by itself (the hang-up closed its stdin)."""
    server, names = lab_cluster
    kubeconfig = _through(server, tmp_path, monkeypatch)
    src, dst = _cross_node_pair(lab, names)
    stop = threading.Event()

    def drop_second_agent() -> None:  # once both sessions are up and the traffic runs, cut node 2's stream
        while not stop.wait(0.2):
            agents = [s for s in server.sessions if s.command[:2] == ["cniprof", "agent"]]
            if len(agents) == 2 and any("ephemeralcontainers" in line for line in server.lines()):
                stop.wait(2.0)
                agents[1].break_after = agents[1].frames_read
                return

    cutter = threading.Thread(target=drop_second_agent, daemon=True)
    cutter.start()
    try:
        rc = main(["trace", "--k8s", "--kubeconfig", str(kubeconfig), "--src", src, "--dst", dst, "--traffic",
                   "ping", "--count", "30", "--duration", "6", "--sample", "1", "--no-ui",
                   "--export", str(tmp_path / "run")])
    finally:
        stop.set()
        cutter.join()
    err = capsys.readouterr().err
    assert rc == 3, err
    assert f"the agent on {lab.nodes[1].name} was lost" in err
    assert (tmp_path / "run" / "summary.json").exists()  # what arrived was still written
    agents = [s for s in server.sessions if s.command[:2] == ["cniprof", "agent"]]
    assert all(s.process.proc.wait(timeout=10) is not None for s in agents)
