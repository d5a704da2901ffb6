# SPDX-License-Identifier: Apache-2.0
"""One cluster run, everything but the tracing itself: the pods and their nodes, the agents' sessions, the
generators, and putting everything back. The coordinator (run/) drives the sessions; this module hands it the
channels and the per-node facts it needs, and undoes what it created on every way out (ExitStack, in reverse):
agent sessions closed (their stdin closes: the agents stop by their own rule), generators stopped, scheduled pods
deleted.

Order of API calls (what `--dry-run` prints): version; the two pods (or: create the client and server pods on
the chosen nodes and poll until Running); per node: the node, its agent pod; per node: exec `cniprof k8s
pod-netns` in the agent pod (pod UID -> network namespace, read on the node); per node: exec `cniprof agent`
(the session); the server generator (ephemeral container, polled until running), then the client's; at the end
the client's log; then the cleanup in reverse.
"""

from __future__ import annotations

import json
import logging
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from cniprof.errors import CniprofError, EnvironmentProblem, UsageError
from cniprof.k8s import generators, manifests
from cniprof.k8s.channel import ExecChannel, exit_status
from cniprof.k8s.cluster import Cluster
from cniprof.k8s.resolve import NodeInfo, PodInfo, node_info, resolve_pod

log = logging.getLogger(__name__)


@dataclass
class ClusterOptions:
    src: str | None = None  # NS/POD
    dst: str | None = None
    nodes: tuple[str, str] | None = None  # --nodes A,B: client pod on A, server pod on B
    traffic: str = "iperf3"
    duration_s: float = 10.0
    count: int = 100
    namespace: str = manifests.DEFAULT_NAMESPACE  # the agents'
    image: str = manifests.DEFAULT_IMAGE  # generators and scheduled pods
    proc: str = manifests.HOST_PROC  # the node's /proc inside the agent container


@dataclass
class ClusterFacts:
    server_version: dict[str, str] = field(default_factory=dict)
    src: PodInfo | None = None
    dst: PodInfo | None = None
    nodes: dict[str, NodeInfo] = field(default_factory=dict)
    pod_netns: dict[str, str] = field(default_factory=dict)  # NS/POD -> namespace path on its node
    cni: dict[str, dict[str, Any]] = field(default_factory=dict)  # node -> what detection found there
    scheduled: list[str] = field(default_factory=list)  # NS/POD created for --nodes (deleted at the end)
    generators: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The `cluster` block of summary.json (the agents add the CNI they detected per node)."""
        return {"server_version": self.server_version.get("git_version"),
                "platform": self.server_version.get("platform"),
                "nodes": {n: {**i.to_dict(), "cni": self.cni.get(n)} for n, i in self.nodes.items()},
                "pods": {p.ref: p.to_dict() for p in (self.src, self.dst) if p is not None},
                "scheduled_pods": list(self.scheduled), "generators": list(self.generators)}


class ClusterRun:
    def __init__(self, cluster: Cluster, opts: ClusterOptions, stack: ExitStack) -> None:
        if opts.nodes is None and not (opts.src and opts.dst):
            raise UsageError("--k8s needs --src NS/POD and --dst NS/POD, or --nodes A,B")
        if opts.nodes is not None and (opts.src or opts.dst):
            raise UsageError("--nodes A,B schedules its own pods: give it without --src/--dst")
        if opts.traffic not in generators.TRAFFIC:
            raise UsageError(f"--traffic {opts.traffic} is not available with --k8s: use one of "
                             f"{', '.join(generators.TRAFFIC)}")
        self.cluster = cluster
        self.opts = opts
        self.stack = stack
        self.facts = ClusterFacts()
        self.channels: dict[str, ExecChannel] = {}

    # -- pods and nodes ---------------------------------------------------------------------------------------
    def resolve(self) -> ClusterFacts:
        f = self.facts
        f.server_version = self.cluster.version()
        if self.opts.nodes is not None:
            f.src, f.dst = self._schedule(*self.opts.nodes)
        else:
            f.src, f.dst = resolve_pod(self.cluster, self.opts.src or ""), resolve_pod(self.cluster, self.opts.dst or "")
        if f.src.ref == f.dst.ref:
            raise UsageError(f"--src and --dst are the same pod ({f.src.ref})")
        for node in dict.fromkeys((f.src.node, f.dst.node)):
            f.nodes[node] = node_info(self.cluster, self.opts.namespace, node)
        return f

    def _schedule(self, client_node: str, server_node: str) -> tuple[PodInfo, PodInfo]:
        ns, limit = self.opts.namespace, int(self.opts.duration_s) + generators.MARGIN_S + 120
        tag = uuid.uuid4().hex[:6]
        made = []
        for role, node in (("client", client_node), ("server", server_node)):
            name = f"cniprof-{role}-{tag}"
            self.cluster.create_pod(ns, generators.traffic_pod(ns, name, node, self.opts.image, limit))
            self.facts.scheduled.append(f"{ns}/{name}")
            self.stack.callback(self._delete_pod, ns, name)
            made.append(name)
        infos = []
        for name in made:
            generators.wait_started(self.cluster, ns, name, "wait")
            infos.append(resolve_pod(self.cluster, f"{ns}/{name}"))
        return infos[0], infos[1]

    def _delete_pod(self, ns: str, name: str) -> None:
        try:
            self.cluster.delete("Pod", name, ns)
        except CniprofError as e:  # cleanup goes on; the pod ends by itself (activeDeadlineSeconds)
            log.warning("could not delete pod %s/%s: %s", ns, name, e)

    # -- on the nodes -----------------------------------------------------------------------------------------
    def _exec_output(self, node: str, argv: list[str]) -> str:
        """Run a short command in the node's agent pod; its stdout (exit status 0) or the error line."""
        agent = self.facts.nodes[node].agent_pod
        ws = self.cluster.exec_stream(self.opts.namespace, agent, manifests.AGENT_CONTAINER, argv, stdin=False)
        if ws is None:  # dry run
            return ""
        try:
            ws.run_forever(timeout=60)
            out, err = ws.read_stdout(), ws.read_stderr()
            rc, failure = exit_status(ws) if not ws.is_open() else (None, "no answer within 60 s")
        finally:
            ws.close()
        if rc != 0:
            last = next((line for line in reversed(err.splitlines()) if line.strip()),
                        failure or f"exit status {rc}")
            raise EnvironmentProblem(f"node {node} ({self.opts.namespace}/{agent}): {last.removeprefix('cniprof: ')}")
        return str(out)

    def pod_namespaces(self) -> dict[str, str]:
        """Each traced pod's network namespace on its node, found by the node itself (`k8s pod-netns`)."""
        f = self.facts
        for node in f.nodes:
            pods = [p for p in (f.src, f.dst) if p is not None and p.node == node]
            out = self._exec_output(node, ["cniprof", "k8s", "pod-netns", *[p.uid for p in pods],
                                           "--proc", self.opts.proc])
            by_uid = {row["uid"]: row["netns"] for row in map(json.loads, out.splitlines()) if row}
            for p in pods:
                f.pod_netns[p.ref] = by_uid.get(p.uid, f"<netns of {p.ref}>" if self.cluster.dry_run else "")
                if not f.pod_netns[p.ref]:
                    raise EnvironmentProblem(f"node {node} did not report the namespace of pod {p.ref}")
        return f.pod_netns

    def detect_cni(self) -> dict[str, dict[str, Any]]:
        """Each node's CNI, detected on the node as `--cni auto` does (`k8s detect` in its agent pod)."""
        for node in self.facts.nodes:
            out = self._exec_output(node, ["cniprof", "k8s", "detect"])  # the agent pod's namespace is the node's
            self.facts.cni[node] = json.loads(out) if out.strip() else {"cni": f"<cni of {node}>", "mode": None}
        return self.facts.cni

    def cni_spec(self) -> str:
        """The one CNI model of the run (NAME:MODE); nodes that disagree, or none detected, stop the run."""
        specs = {n: f"{d.get('cni')}:{d.get('mode')}" if d.get("mode") else str(d.get("cni"))
                 for n, d in self.facts.cni.items()}
        if len(set(specs.values())) != 1 or any(d.get("cni") is None for d in self.facts.cni.values()):
            seen = ", ".join(f"{n}: {s}" for n, s in specs.items())
            raise EnvironmentProblem(f"the nodes' CNIs differ or were not detected ({seen}): cniprof traces one "
                                     "CNI model per run")
        return next(iter(specs.values()))

    def open_agents(self) -> dict[str, ExecChannel]:
        """One agent session per node (exec `cniprof agent --node NODE`, stdin+stdout); closed at the end."""
        for node, info in self.facts.nodes.items():
            ws = self.cluster.exec_stream(self.opts.namespace, info.agent_pod, manifests.AGENT_CONTAINER,
                                          ["cniprof", "agent", "--node", node], stdin=True)
            if ws is None:  # dry run
                continue
            ch = ExecChannel(node, ws, f"{self.opts.namespace}/{info.agent_pod}")
            self.stack.callback(ch.close)
            self.channels[node] = ch
        return self.channels

    # -- traffic ----------------------------------------------------------------------------------------------
    def start_traffic(self) -> list[generators.Generator]:
        f = self.facts
        assert f.src is not None and f.dst is not None
        gens = generators.plan(self.opts.traffic, f.src.ref, f.dst.ref, f.dst.ip, self.opts.duration_s,
                               self.opts.count)
        for gen in gens:
            ns, name = gen.pod.split("/", 1)
            pod = self.cluster.read_pod(ns, name)
            self.cluster.add_ephemeral_container(pod, generators.ephemeral_container(gen, self.opts.image))
            self.stack.callback(self._stop_generator, gen)
            f.generators.append({"pod": gen.pod, "container": gen.container, "role": gen.role,
                                 "command": list(gen.argv)})
            generators.wait_started(self.cluster, ns, name, gen.container)
        self.generators = gens
        return gens

    def _stop_generator(self, gen: generators.Generator) -> None:
        ns, name = gen.pod.split("/", 1)
        try:
            state, _ = generators.container_state(self.cluster.read_pod(ns, name), gen.container)
            if state in ("running", "waiting") or self.cluster.dry_run:  # a dry run shows the stop it may need
                generators.stop(self.cluster, ns, name, gen.container)
        except CniprofError as e:  # it ends by itself at its timeout
            log.warning("could not stop %s in %s: %s (it ends by itself within %d s)", gen.container, gen.pod, e,
                        int(self.opts.duration_s) + generators.MARGIN_S)

    def traffic_result(self) -> dict[str, Any]:
        """Wait for the client generator and parse its log ({} for --traffic none)."""
        gens = getattr(self, "generators", [])
        client = next((g for g in gens if g.role == "client"), None)
        if client is None:
            return {}
        ns, name = client.pod.split("/", 1)
        code = generators.wait_ended(self.cluster, ns, name, client.container, generators.MARGIN_S)
        text = self.cluster.read_log(ns, name, client.container)
        if self.cluster.dry_run:
            return {}
        return generators.result(self.opts.traffic, text, code)
