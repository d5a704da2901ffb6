# SPDX-License-Identifier: Apache-2.0
"""Traffic inside the real pods: generators as ephemeral containers with the cniprof image (an ephemeral container
shares its pod's network namespace, so the packets leave from the pod's own eth0), and, for `--nodes A,B`, a
client and a server pod pinned to those nodes.

Nothing here can outlive the run by long: every generator runs under `timeout` (duration + a margin), so it ends
by itself even when cniprof is killed; scheduled pods sleep for the same bound and carry activeDeadlineSeconds.
Ephemeral containers cannot be removed from a pod (the API has no such call): they end when their process ends,
and stay listed, terminated, in the pod's status. Ending one early (Ctrl-C) is an exec of `kill 1` in it (its own
PID namespace: PID 1 is its `timeout`, which passes the signal on).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from kubernetes import client

from cniprof.errors import CniprofError, EnvironmentProblem, UsageError
from cniprof.k8s.cluster import Cluster
from cniprof.traffic.iperf3 import Iperf3, parse_client_json
from cniprof.traffic.ping import Ping, parse_ping

TRAFFIC = ("iperf3", "ping", "none")
MARGIN_S = 60  # generators and scheduled pods end by themselves this long after the traced duration
READY_TIMEOUT_S = 120.0  # image pull and start of an ephemeral container or a scheduled pod
POLL_S = 0.5
TRAFFIC_LABELS = {"app.kubernetes.io/name": "cniprof-traffic", "app.kubernetes.io/part-of": "cniprof"}


@dataclass(frozen=True)
class Generator:
    """One process to run in a pod: its container name, command, and the pod it runs in ("ns/name")."""

    pod: str
    container: str
    argv: tuple[str, ...]
    role: str  # server | client


def bounded(argv: list[str], limit_s: int) -> list[str]:
    """argv under coreutils timeout: TERM at the limit, KILL 5 s later."""
    return ["timeout", "-k", "5", str(limit_s), *argv]


def plan(traffic: str, src: str, dst: str, dst_ip: str, duration_s: float, count: int) -> list[Generator]:
    """The generators of a run, server first (started and running before the client)."""
    if traffic not in TRAFFIC:
        raise UsageError(f"--traffic {traffic} is not available with --k8s: use one of {', '.join(TRAFFIC)}")
    if traffic == "none":
        return []
    tag = uuid.uuid4().hex[:6]
    limit = int(duration_s) + MARGIN_S
    if traffic == "iperf3":
        gen = Iperf3("", "", dst_ip, duration_s)
        # the client retries until the server listens (its container may start a moment later than Running
        # says); only the successful try's JSON is printed (no file: the image's root may be read-only)
        client_cmd = " ".join(gen.client_argv())
        retry = (f"for i in $(seq 20); do out=$({client_cmd} 2>/dev/null) && {{ echo \"$out\"; exit 0; }}; sleep 0.5; "
                 "done; echo \"$out\"; exit 1")
        return [Generator(dst, f"cniprof-iperf3-server-{tag}", tuple(bounded(gen.server_argv(), limit)), "server"),
                Generator(src, f"cniprof-iperf3-client-{tag}", tuple(bounded(["sh", "-c", retry], limit)),
                          "client")]
    argv = Ping("", dst_ip, count=count, interval_s=0.2).argv()
    return [Generator(src, f"cniprof-ping-{tag}", tuple(bounded(argv, limit)), "client")]


def ephemeral_container(gen: Generator, image: str) -> client.V1EphemeralContainer:
    return client.V1EphemeralContainer(name=gen.container, image=image, image_pull_policy="IfNotPresent",
                                       command=list(gen.argv), stdin=False, tty=False)


def container_state(pod: client.V1Pod, name: str) -> tuple[str, int | None]:
    """('waiting'|'running'|'terminated'|'absent', exit code) of an ephemeral or regular container."""
    statuses = list((pod.status.ephemeral_container_statuses or []) if pod.status else [])
    statuses += list((pod.status.container_statuses or []) if pod.status else [])
    for st in statuses:
        if st.name == name:
            if st.state is not None and st.state.terminated is not None:
                return "terminated", st.state.terminated.exit_code
            if st.state is not None and st.state.running is not None:
                return "running", None
            return "waiting", None
    return "absent", None


def wait_started(cluster: Cluster, ns: str, pod: str, container: str, timeout_s: float = READY_TIMEOUT_S) -> str:
    """Poll the pod until the container runs (or already ended); returns that state."""
    deadline = time.monotonic() + timeout_s
    while True:
        p = cluster.read_pod(ns, pod)
        state, _ = container_state(p, container)
        if state in ("running", "terminated") or cluster.dry_run:
            return state
        if time.monotonic() >= deadline:
            raise EnvironmentProblem(f"container {container} in {ns}/{pod} did not start within {timeout_s:.0f} s "
                                     f"(image pull? kubectl -n {ns} describe pod {pod})")
        time.sleep(POLL_S)


def wait_ended(cluster: Cluster, ns: str, pod: str, container: str, timeout_s: float) -> int | None:
    """Poll until the container terminated; its exit code (None if it still ran at the timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        state, code = container_state(cluster.read_pod(ns, pod), container)
        if state == "terminated" or cluster.dry_run:
            return code
        if time.monotonic() >= deadline:
            return None
        time.sleep(POLL_S)


def stop(cluster: Cluster, ns: str, pod: str, container: str) -> None:
    """End a generator early: `kill 1` in its container (PID 1 is its timeout, which passes TERM on)."""
    ws = cluster.exec_stream(ns, pod, container, ["kill", "-TERM", "1"], stdin=False)
    if ws is not None:
        ws.run_forever(timeout=10)
        ws.close()


def result(traffic: str, log_text: str, exit_code: int | None) -> dict[str, Any]:
    """The traffic block of summary.json from the client container's log."""
    if traffic == "iperf3":
        try:
            r = parse_client_json(log_text)
        except CniprofError as e:
            raise CniprofError(f"iperf3 in the pod failed (exit {exit_code}): {e}") from None
        return {"generator": "iperf3", "throughput_bps": r.throughput_bps, "retransmits": r.retransmits,
                "duration_s": r.duration_s, "bytes": r.bytes}
    p = parse_ping(log_text)
    return {"generator": "ping", "transmitted": p.transmitted, "received": p.received, "loss_pct": p.loss_pct,
            "rtt_avg_ms": p.avg_ms, "rtt_min_ms": p.min_ms, "rtt_max_ms": p.max_ms}


def traffic_pod(ns: str, name: str, node: str, image: str, limit_s: int) -> client.V1Pod:
    """A pod pinned to a node (nodeName: no scheduler decision) that only waits; generators join it as
    ephemeral containers like in any traced pod. It ends by itself after limit_s (activeDeadlineSeconds)."""
    return client.V1Pod(
        api_version="v1", kind="Pod",
        metadata=client.V1ObjectMeta(name=name, namespace=ns, labels=dict(TRAFFIC_LABELS)),
        spec=client.V1PodSpec(
            node_name=node, restart_policy="Never", active_deadline_seconds=limit_s,
            automount_service_account_token=False, termination_grace_period_seconds=1,
            tolerations=[client.V1Toleration(operator="Exists")],
            containers=[client.V1Container(name="wait", image=image, image_pull_policy="IfNotPresent",
                                           command=["sleep", str(limit_s)])]))
