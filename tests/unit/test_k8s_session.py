# SPDX-License-Identifier: Apache-2.0
"""A cluster run's API side, end to end through the real kubernetes client with only the transport replaced
(REST below urllib3, exec below kubernetes.stream; tests/unit/k8s_api.py): pods by name, the agent per node, the
node's own pod -> namespace answer (the real `cniprof k8s pod-netns` over a /proc tree made here), one agent
session per node, generators as ephemeral containers, `--nodes` pods, and the cleanup on every way out."""

from __future__ import annotations

import io
import json
import re
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest
from k8s_api import ExecProcess, FakeApiServer, install_exec, node, pod

from cniprof.errors import CniprofError, EnvironmentProblem, UsageError
from cniprof.k8s.cluster import ApiRefused, Cluster, DryRun
from cniprof.k8s.session import ClusterOptions, ClusterRun

DATA = Path(__file__).parent / "data"
UID_SRC, UID_DST = "3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f", "7a2b3c4d-1e2f-4a5b-9c8d-7e6f5a4b3c2d"
AGENT = {"app.kubernetes.io/name": "cniprof-agent", "app.kubernetes.io/part-of": "cniprof"}
PEER = r"""
import json, sys
print(json.dumps({"type": "hello", "protocol": 1, "node": sys.argv[1], "pid": 1}), flush=True)
for line in sys.stdin:
    print(json.dumps({"echo": json.loads(line)}), flush=True)
"""


def fake_proc(root: Path, procs: dict[int, str]) -> Path:
    """A /proc tree: pid -> its cgroup path (v2 line), with an ns/net file per process (its inode is the
    'namespace' the real command reports)."""
    for pid, path in procs.items():
        (root / str(pid) / "ns").mkdir(parents=True)
        (root / str(pid) / "cgroup").write_text(f"0::{path}\n")
        (root / str(pid) / "ns" / "net").write_text("")
    return root


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeApiServer:
    fake = FakeApiServer()
    fake.add_pod(pod("default", "client", "node-a", "10.244.1.5", UID_SRC))
    fake.add_pod(pod("web", "server", "node-b", "10.244.2.7", UID_DST, ("nginx", "sidecar")))
    for n, ip in (("node-a", "192.0.2.1"), ("node-b", "192.0.2.2")):
        fake.nodes[n] = node(n, "6.1.0-18-cloud-amd64", "amd64")
        fake.add_pod(pod("cniprof", f"cniprof-agent-{n[-1]}", n, ip, f"agent-{n}", ("agent",), labels=AGENT))
    u_ = UID_SRC.replace("-", "_")
    proc = fake_proc(tmp_path / "proc", {
        41: f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u_}.slice/cri-containerd-ab.scope",
        77: f"/kubepods/burstable/pod{UID_DST}/crio-cd", 90: "/system.slice/kubelet.service"})

    noderoot = tmp_path / "node"
    (noderoot / "etc/cni/net.d").mkdir(parents=True)
    (noderoot / "etc/cni/net.d/10-flannel.conflist").write_text(
        json.dumps({"cniVersion": "0.3.1", "name": "cbr0", "plugins": [{"type": "flannel"}]}))
    (noderoot / "run/flannel").mkdir(parents=True)
    (noderoot / "run/flannel/subnet.env").write_text("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\n")

    def exec_handler(path: str, query: dict[str, list[str]]) -> ExecProcess:
        argv = query["command"]
        if argv[:3] == ["cniprof", "k8s", "pod-netns"]:  # the real command, on the /proc tree above
            uids = [a for a in argv[3:] if not a.startswith("--") and a != "/host/proc"]
            for p in fake.pods.values():  # pods the test scheduled get a process, as the kubelet would start
                uid = p["metadata"]["uid"]
                if p["metadata"]["namespace"] == "cniprof" and uid in uids and not (proc / uid[:8]).exists():
                    fake_proc(proc, {1000 + len(list(proc.iterdir())): f"/kubepods/besteffort/pod{uid}/x"})
            return ExecProcess([sys.executable, "-m", "cniprof", "k8s", "pod-netns", *uids, "--proc", str(proc)])
        if argv[:3] == ["cniprof", "k8s", "detect"]:  # the real command, on a node root made here
            return ExecProcess([sys.executable, "-m", "cniprof", "k8s", "detect", "--root", str(noderoot)])
        if argv[:2] == ["cniprof", "agent"]:
            return ExecProcess([sys.executable, "-c", PEER, argv[-1]])
        if argv[:2] == ["kill", "-TERM"]:
            return ExecProcess(["true"])
        raise AssertionError(f"unexpected exec {argv}")

    def on_ephemeral(p: dict, c: dict) -> tuple[dict, str]:
        if "client" in c["name"]:  # iperf3's client: it ran, its log is its JSON
            return {"terminated": {"exitCode": 0}}, (DATA / "iperf3_tcp.json").read_text()
        return {"running": {}}, ""

    fake.exec_handler, fake.on_ephemeral = exec_handler, on_ephemeral
    install_exec(fake, monkeypatch)
    fake.proc = proc  # type: ignore[attr-defined]
    yield fake
    for s in fake.sessions:
        if s.process.proc.poll() is None:
            s.process.proc.kill()
        s.process.proc.wait(timeout=10)


def run_all(cluster: Cluster, opts: ClusterOptions, interrupt_after: str | None = None) -> tuple[ClusterRun, dict]:
    with ExitStack() as stack:
        run = ClusterRun(cluster, opts, stack)
        facts = run.resolve()
        run.pod_namespaces()
        run.detect_cni()
        channels = run.open_agents()
        hellos = {n: ch.recv(10) for n, ch in channels.items()}
        run.start_traffic()
        if interrupt_after == "traffic":
            raise KeyboardInterrupt
        traffic = run.traffic_result()
        return run, {"facts": facts, "hellos": hellos, "traffic": traffic}


def test_a_whole_run_its_requests_and_its_results(server: FakeApiServer) -> None:
    run, out = run_all(Cluster(server.client()), ClusterOptions(src="default/client", dst="web/server"))
    facts = out["facts"]
    assert (facts.src.node, facts.src.ip, facts.src.uid) == ("node-a", "10.244.1.5", UID_SRC)
    assert facts.dst.containers == ("nginx", "sidecar")
    assert {n: i.agent_pod for n, i in facts.nodes.items()} == {"node-a": "cniprof-agent-a",
                                                               "node-b": "cniprof-agent-b"}
    proc = server.proc  # type: ignore[attr-defined]
    assert facts.pod_netns == {"default/client": f"{proc}/41/ns/net", "web/server": f"{proc}/77/ns/net"}
    assert {n: h["node"] for n, h in out["hellos"].items()} == {"node-a": "node-a", "node-b": "node-b"}
    assert {n: (d["cni"], d["mode"]) for n, d in facts.cni.items()} == {"node-a": ("flannel", "vxlan"),
                                                                        "node-b": ("flannel", "vxlan")}
    assert run.cni_spec() == "flannel:vxlan"
    assert facts.summary()["nodes"]["node-b"]["kernel"] == "6.1.0-18-cloud-amd64"
    assert out["traffic"]["generator"] == "iperf3" and out["traffic"]["throughput_bps"] > 0
    lines = [re.sub(r"-[0-9a-f]{6}\b", "-TAG", line) for line in server.lines()]
    assert lines == [
        "GET /version/",
        "GET /api/v1/namespaces/default/pods/client",
        "GET /api/v1/namespaces/web/pods/server",
        "GET /api/v1/nodes/node-a",
        ("GET /api/v1/namespaces/cniprof/pods?fieldSelector=spec.nodeName=node-a&labelSelector="
        "app.kubernetes.io/name=cniprof-agent,app.kubernetes.io/part-of=cniprof"),
        "GET /api/v1/nodes/node-b",
        ("GET /api/v1/namespaces/cniprof/pods?fieldSelector=spec.nodeName=node-b&labelSelector="
        "app.kubernetes.io/name=cniprof-agent,app.kubernetes.io/part-of=cniprof"),
        (f"GET /api/v1/namespaces/cniprof/pods/cniprof-agent-a/exec?command=cniprof&command=k8s&command=pod-netns"
        f"&command={UID_SRC}&command=--proc&command=/host/proc&container=agent&stderr=true&stdin=false&stdout=true"
        "&tty=false"),
        (f"GET /api/v1/namespaces/cniprof/pods/cniprof-agent-b/exec?command=cniprof&command=k8s&command=pod-netns"
        f"&command={UID_DST}&command=--proc&command=/host/proc&container=agent&stderr=true&stdin=false&stdout=true"
        "&tty=false"),
        ("GET /api/v1/namespaces/cniprof/pods/cniprof-agent-a/exec?command=cniprof&command=k8s&command=detect"
         "&container=agent&stderr=true&stdin=false&stdout=true&tty=false"),
        ("GET /api/v1/namespaces/cniprof/pods/cniprof-agent-b/exec?command=cniprof&command=k8s&command=detect"
         "&container=agent&stderr=true&stdin=false&stdout=true&tty=false"),
        ("GET /api/v1/namespaces/cniprof/pods/cniprof-agent-a/exec?command=cniprof&command=agent&command=--node"
        "&command=node-a&container=agent&stderr=true&stdin=true&stdout=true&tty=false"),
        ("GET /api/v1/namespaces/cniprof/pods/cniprof-agent-b/exec?command=cniprof&command=agent&command=--node"
        "&command=node-b&container=agent&stderr=true&stdin=true&stdout=true&tty=false"),
        "GET /api/v1/namespaces/web/pods/server",
        "PATCH /api/v1/namespaces/web/pods/server/ephemeralcontainers",
        "GET /api/v1/namespaces/web/pods/server",
        "GET /api/v1/namespaces/default/pods/client",
        "PATCH /api/v1/namespaces/default/pods/client/ephemeralcontainers",
        "GET /api/v1/namespaces/default/pods/client",
        "GET /api/v1/namespaces/default/pods/client",
        "GET /api/v1/namespaces/default/pods/client/log?container=cniprof-iperf3-client-TAG",
        # cleanup, in reverse: the client generator had ended, the server's is stopped by exec; sessions closed
        "GET /api/v1/namespaces/default/pods/client",
        "GET /api/v1/namespaces/web/pods/server",
        ("GET /api/v1/namespaces/web/pods/server/exec?command=kill&command=-TERM&command=1"
        "&container=cniprof-iperf3-server-TAG&stderr=true&stdin=false&stdout=true&tty=false"),
    ]
    assert [line.split("  #")[0] for line in run.cluster.calls] == server.lines()  # the journal is the wire
    patch = next(r for r in server.requests if r.path.endswith("/server/ephemeralcontainers"))
    assert patch.headers["Content-Type"] == "application/strategic-merge-patch+json"
    (ec,) = patch.body["spec"]["ephemeralContainers"]
    assert ec["image"] == "cniprof:0.1.0" and ec["command"][:4] == ["timeout", "-k", "5", "70"]
    assert ec["command"][4:] == ["iperf3", "-s", "-1", "-p", "5201"]
    # every agent session ended: its stdin closed by the channel, the agent (peer) exited by itself
    agents = [s for s in server.sessions if s.command[:2] == ["cniprof", "agent"]]
    assert len(agents) == 2
    assert all(s.process.proc.wait(timeout=5) == 0 for s in agents)


def test_dry_run_prints_the_same_calls_in_order(server: FakeApiServer) -> None:
    _, _ = run_all(Cluster(server.client()), ClusterOptions(src="default/client", dst="web/server"))
    real = [re.sub(r"-[0-9a-f]{6}\b", "-TAG", line) for line in server.lines()]
    out = io.StringIO()
    dry = DryRun(out=out)
    with ExitStack() as stack:
        run = ClusterRun(dry, ClusterOptions(src="default/client", dst="web/server"), stack)
        run.resolve()
        run.pod_namespaces()
        run.detect_cni()
        run.open_agents()
        run.start_traffic()
        run.traffic_result()
    printed = [re.sub(r"-[0-9a-f]{6}\b", "-TAG", line.split("  #")[0]) for line in out.getvalue().splitlines()]
    names = {"<node of default/client>": "node-a", "<node of web/server>": "node-b",
             "<agent pod on node-a>": "cniprof-agent-a", "<agent pod on node-b>": "cniprof-agent-b",
             "<uid of default/client>": UID_SRC, "<uid of web/server>": UID_DST}
    for placeholder, value in names.items():
        printed = [line.replace(placeholder, value) for line in printed]
    # the dry run cannot know that the client generator ends before the first poll, nor what cleanup finds
    # running, so it polls once less and shows the stop (kill) of both generators; the rest is the same calls
    assert printed[:20] == real[:20]
    assert [line for line in printed[20:] if "/log" in line] == [line for line in real if "/log" in line]
    kills = [line for line in printed if "command=kill" in line]
    assert len(kills) == 2 and kills[1] in real
    assert server.requests[-1].path.endswith("/exec")  # nothing was sent by the dry run itself
    assert len(server.requests) == len(real)


def test_missing_pod_is_a_usage_error(server: FakeApiServer) -> None:
    with pytest.raises(UsageError, match=r"no pod default/nope \(kubectl get pod -n default nope\)") as e:
        run_all(Cluster(server.client()), ClusterOptions(src="default/nope", dst="web/server"))
    assert e.value.exit_code == 2


def test_node_without_an_agent_names_the_fix(server: FakeApiServer) -> None:
    del server.pods[("cniprof", "cniprof-agent-b")]
    with pytest.raises(EnvironmentProblem, match=r"no running cniprof agent pod on node node-b .*cniprof k8s deploy"):
        run_all(Cluster(server.client()), ClusterOptions(src="default/client", dst="web/server"))
    assert not any("/exec" in r.path for r in server.requests)  # nothing started before the check


def test_pod_unknown_on_its_node(server: FakeApiServer) -> None:
    """The API says the pod is on node-b, but node-b sees no process of it (it just moved, or /proc is not the
    node's): the node's one-line answer reaches the user."""
    server.pods[("web", "server")]["metadata"]["uid"] = "00000000-0000-4000-8000-000000000000"
    with pytest.raises(EnvironmentProblem, match=r"node node-b \(cniprof/cniprof-agent-b\): no process of pod "
                                                 r"00000000-0000-4000-8000-000000000000"):
        run_all(Cluster(server.client()), ClusterOptions(src="default/client", dst="web/server"))


def test_forbidden_generator_stops_and_cleans_up(server: FakeApiServer) -> None:
    server.fail[("PATCH", r".*/ephemeralcontainers")] = 403
    with pytest.raises(ApiRefused, match="adding ephemeral container .* forbidden") as e:
        run_all(Cluster(server.client()), ClusterOptions(src="default/client", dst="web/server"))
    assert e.value.exit_code == 3
    agents = [s for s in server.sessions if s.command[:2] == ["cniprof", "agent"]]
    assert len(agents) == 2 and all(s.process.proc.wait(timeout=5) == 0 for s in agents)


def test_interrupt_stops_generators_and_sessions(server: FakeApiServer) -> None:
    server.on_ephemeral = lambda p, c: ({"running": {}}, "")  # both generators still run at Ctrl-C
    with pytest.raises(KeyboardInterrupt):
        run_all(Cluster(server.client()), ClusterOptions(src="default/client", dst="web/server"),
                interrupt_after="traffic")
    kills = [r for r in server.requests if r.query.get("command", [""])[0] == "kill"]
    assert [r.path.split("/")[6] for r in kills] == ["client", "server"]  # reverse order of start
    assert all(s.process.proc.wait(timeout=5) == 0 for s in server.sessions)


def test_nodes_schedules_pinned_pods_and_deletes_them(server: FakeApiServer) -> None:
    with pytest.raises(KeyboardInterrupt):
        run_all(Cluster(server.client()), ClusterOptions(nodes=("node-a", "node-b")), interrupt_after="traffic")
    posts = [r for r in server.requests if r.method == "POST"]
    assert [(p.body["spec"]["nodeName"], p.body["metadata"]["name"].split("-")[1]) for p in posts] == [
        ("node-a", "client"), ("node-b", "server")]
    assert all(p.body["spec"]["activeDeadlineSeconds"] >= 10 for p in posts)
    deletes = [r.path.rsplit("/", 1)[1] for r in server.requests if r.method == "DELETE"]
    assert deletes == [posts[1].body["metadata"]["name"], posts[0].body["metadata"]["name"]]
    assert not [k for k in server.pods if k[0] == "cniprof" and "agent" not in k[1]]


def test_a_name_collision_deletes_nothing_it_did_not_create(server: FakeApiServer) -> None:
    server.fail[("POST", r"/api/v1/namespaces/cniprof/pods")] = 409
    with pytest.raises(ApiRefused, match="answered 409"):
        run_all(Cluster(server.client()), ClusterOptions(nodes=("node-a", "node-b")))
    assert not [r for r in server.requests if r.method == "DELETE"]


def test_flags_that_do_not_go_together() -> None:
    with pytest.raises(UsageError, match="--src NS/POD and --dst NS/POD, or --nodes"):
        ClusterRun(DryRun(out=io.StringIO()), ClusterOptions(src="a/b"), ExitStack())
    with pytest.raises(UsageError, match="without --src/--dst"):
        ClusterRun(DryRun(out=io.StringIO()), ClusterOptions(src="a/b", dst="c/d", nodes=("x", "y")), ExitStack())
    with pytest.raises(CniprofError, match="not available with --k8s"):
        from cniprof.k8s.generators import plan
        plan("udp", "a/b", "c/d", "10.0.0.1", 5, 10)


def test_nodes_with_different_cnis_are_refused(server: FakeApiServer) -> None:
    with ExitStack() as stack:
        run = ClusterRun(Cluster(server.client()), ClusterOptions(src="default/client", dst="web/server"), stack)
        run.resolve()
        run.detect_cni()
        run.facts.cni["node-b"] = {"cni": "calico", "mode": "vxlan"}
        with pytest.raises(EnvironmentProblem, match=r"node-a: flannel:vxlan, node-b: calico:vxlan"):
            run.cni_spec()


def test_trace_dry_run_command(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """`cniprof trace --k8s --dry-run` needs no cluster and no kubeconfig: it prints the calls and exits 0."""
    from cniprof.cli.main import main

    monkeypatch.setenv("KUBECONFIG", "/nonexistent")
    assert main(["trace", "--k8s", "--dry-run", "--nodes", "node-a,node-b", "--traffic", "ping", "--count", "5",
                 "--namespace", "prof", "--image", "registry.test/cniprof:1"]) == 0
    out = capsys.readouterr().out.splitlines()
    calls = [line for line in out if not line.startswith("#")]
    assert calls[0] == "GET /version/"
    assert calls[1].startswith("POST /api/v1/namespaces/prof/pods  # pod cniprof-client-")
    assert calls[2].startswith("POST /api/v1/namespaces/prof/pods  # pod cniprof-server-")
    assert sum("command=agent" in line for line in calls) == 2
    assert sum("/ephemeralcontainers" in line for line in calls) == 1  # ping: one client generator
    assert [line.split()[0] for line in calls[-2:]] == ["DELETE", "DELETE"]  # server pod, then client pod
    assert any(line.startswith("# on each agent session") for line in out)


def test_trace_k8s_flags(capsys: pytest.CaptureFixture[str]) -> None:
    from cniprof.cli.main import main

    assert main(["trace", "--nodes", "a,b", "--dry-run"]) == 2
    assert "add --k8s" in capsys.readouterr().err
    assert main(["trace", "--k8s", "--nodes", "a", "--dry-run"]) == 2
    assert "two different node names" in capsys.readouterr().err
    assert main(["trace", "--k8s", "--dry-run", "--src", "default/a", "--dst", "b/c", "--traffic", "udp"]) == 2
    out = capsys.readouterr()
    assert "not available with --k8s" in out.err and out.out == ""  # refused before any call is printed


def test_traffic_none_adds_no_container(capsys: pytest.CaptureFixture[str]) -> None:
    from cniprof.cli.main import main

    assert main(["trace", "--k8s", "--dry-run", "--src", "default/a", "--dst", "web/b", "--traffic", "none"]) == 0
    out = capsys.readouterr().out
    assert "ephemeralcontainers" not in out and "/log" not in out and "command=kill" not in out
    assert out.count("command=agent") == 2
