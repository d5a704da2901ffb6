# SPDX-License-Identifier: Apache-2.0
"""`cniprof agent`: one node's half of a cross-node trace, driven through stdin/stdout JSON lines.

The protocol is ARCHITECTURE.md "Node agents" (version 1). The agent owns no socket: whoever started it (a local
coordinator, `kubectl exec`, the cluster mode) owns its stdin and stdout. It traces its node's points with the
ordinary hop engine in agent mode (identity sampling, records of the packets crossing between nodes) and stops,
detaching everything, when stdin closes, on SIGTERM/SIGINT, or when its parent dies.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import platform
import select
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from cniprof import __version__
from cniprof.analysis import clock
from cniprof.bpf.build import object_path
from cniprof.cni import registry
from cniprof.cni.topology import Pod, Topology
from cniprof.errors import CniprofError, EnvironmentProblem, UsageError
from cniprof.interrupts import exit_status, sigterm_interrupts
from cniprof.lab import saved
from cniprof.node import detect
from cniprof.probes import plan as planning
from cniprof.probes.hops import HopProbe
from cniprof.run import pod_to_service

log = logging.getLogger(__name__)

PROTOCOL = 1
POLL_S = 0.1  # stdin, the ring buffer and the parent are checked this often (stdin EOF -> stopped within 1 s)
BTF_PATH = "/sys/kernel/btf/vmlinux"
MAX_LINE = 1 << 20


def hello(node: str) -> dict[str, Any]:
    return {"type": "hello", "protocol": PROTOCOL, "node": node, "pid": os.getpid(), "kernel": platform.release(),
            "arch": platform.machine(), "cniprof_version": __version__}


_KINDS = {dict: "an object", str: "a string", list: "a list"}


def _require(obj: dict[str, Any], key: str, kind: type, where: str = "spec.") -> Any:
    if key not in obj or not isinstance(obj[key], kind):
        raise UsageError(f"start: {where}{key} is missing or not {_KINDS[kind]}")
    return obj[key]


def node_topology(spec: dict[str, Any], node: str) -> Topology:
    """This node as a Topology: the lab's node (lab) or the node as detected (live)."""
    kind = spec.get("topology", "lab")
    if kind == "lab":
        topo = saved.load()
        if topo is None:
            raise EnvironmentProblem("no cniprof lab is up on this machine: `cniprof lab up` first (with the "
                                     "coordinator's CNIPROF_LAB_ID)")
        try:
            return planning.node_topology(topo, node)
        except KeyError:
            names = ", ".join(n.name for n in topo.nodes)
            raise UsageError(f"the lab has no node {node!r}; its nodes: {names}") from None
    if kind == "live":
        _, topo, _ = detect.resolve(Path("/"), spec.get("netns"))
        return topo
    raise UsageError(f"start: spec.topology must be lab or live, not {kind!r}")


def _inode(netns: str) -> int | None:
    """A namespace's inode from its name (/run/netns/NAME) or path (/proc/PID/ns/net); None if it is gone."""
    try:
        return os.stat(netns if netns.startswith("/") else f"/run/netns/{netns}").st_ino
    except OSError:
        return None


def _same_netns(a: str, b: str) -> bool:
    """One namespace, whatever names it: a /run/netns name and a /proc/PID/ns/net path of the same namespace
    are equal (a cluster names a pod's namespace by a process of the pod, detection by its bind mount)."""
    return a == b or (_inode(a) is not None and _inode(a) == _inode(b))


def local_pods(spec: dict[str, Any], topo: Topology) -> dict[str, Pod]:
    """spec name -> this node's pod: by namespace when the spec gives one, else by IP (the spec's name wins)."""
    out = {}
    candidates = list(topo.pods) + [topo.host_endpoint(n.name) for n in topo.nodes
                                    if topo.host_ips.get(n.name) or topo.underlay_ips.get(n.name)]
    for want in _require(spec, "pods", list):
        name, ip, netns = want.get("name"), want.get("ip"), want.get("netns")
        found = [p for p in candidates if (_same_netns(p.netns, netns) if netns else p.ip == ip)]
        if not found:
            raise UsageError(f"no pod with {'netns ' + netns if netns else 'IP ' + str(ip)} on this node "
                             f"(pods here: {', '.join(f'{p.name} {p.ip}' for p in topo.pods) or 'none'})")
        out[str(name)] = dataclasses.replace(found[0], name=str(name))
    return out


def node_plan(spec: dict[str, Any]) -> tuple[planning.Plan, str]:
    node = str(_require(spec, "node", str))
    model = registry.parse(str(_require(spec, "cni", str)))
    path = str(spec.get("path", "cross-node"))
    chain = model.chain(pod_to_service.chain_path(path))
    topo = node_topology(spec, node)
    pods = local_pods(spec, topo)
    dirs = []
    for d in _require(spec, "directions", list):
        side = d.get("side")
        local = pods.get(d.get("src_pod") if side == "src" else d.get("dst_pod"))
        if local is None:
            raise UsageError(f"direction {d.get('dir')}: its {side} pod is not among spec.pods")
        dirs.append(planning.NodeDirection(int(d["dir"]), str(d["src_pod"]), str(d["dst_pod"]), str(d["src_ip"]),
                                           str(d["dst_ip"]), str(side), local))
    events = tuple(spec.get("events") or planning.DEFAULT_EVENTS)
    plan = planning.build_node_plan(topo, chain, tuple(dirs), events)
    # rows are named as the run names them: this node's name, the spec's pod names
    by_ns = {p.netns: name for name, p in pods.items()}
    points = tuple(dataclasses.replace(p, node=node, pod=by_ns.get(p.netns, p.pod) if p.pod else None)
                   for p in plan.points)
    return dataclasses.replace(plan, points=points), node


class Agent:
    """One agent process: reads commands, writes replies, owns one HopProbe in agent mode."""

    def __init__(self, node: str, out: IO[bytes], in_fd: int = 0):
        self.node = node
        self.out = out
        self.in_fd = in_fd
        self.probe: HopProbe | None = None
        self.offset_ns = 0
        self.seq = 0
        self.pending = bytearray()
        self.done = False
        self.parent = os.getppid()  # before the hello: a parent dying right after reading it is still noticed

    def send(self, obj: dict[str, Any]) -> None:
        self.out.write(json.dumps(obj, separators=(",", ":")).encode() + b"\n")
        self.out.flush()

    # --- commands ---
    def start(self, cmd: dict[str, Any]) -> dict[str, Any]:
        if self.probe is not None:
            raise UsageError("start: already started (one start per agent)")
        spec = _require(cmd, "spec", dict, where="")
        t0 = time.monotonic()
        plan, self.node = node_plan(spec)
        self.offset_ns = int(spec.get("test_clock_offset_ns") or 0)
        probe = HopProbe(object_path("hops"), plan.points, plan.expected, plan.directions,
                         stale_ms=float(spec.get("stale_ms", 1000.0)), sample_every=int(spec.get("sample_every", 1)),
                         agent=True, max_records_per_s=int(spec.get("max_records_per_s", 5000)))
        try:
            probe.start()
        except BaseException:
            probe.close()
            raise
        self.probe = probe
        snap_points = probe.snapshot()["points"]
        return {"type": "started", "node": self.node, "points": snap_points, "programs": list(probe.attached),
                "prog_ids": probe.prog_ids(), "attach_s": round(time.monotonic() - t0, 3)}

    def _probe(self) -> HopProbe:
        if self.probe is None:
            raise UsageError("not started: send start first")
        return self.probe

    def snapshot(self, cmd: dict[str, Any]) -> dict[str, Any]:
        probe = self._probe()
        snap = probe.snapshot()
        self.drain()
        raw, self.pending = bytes(self.pending), bytearray()
        self.seq += 1
        return {"type": "snapshot", "node": self.node, "seq": self.seq, "snapshot": snap,
                "records": clock.encode(raw, self.offset_ns), "records_total": probe.record_counters()}

    def set(self, cmd: dict[str, Any]) -> dict[str, Any]:
        probe = self._probe()
        n = cmd.get("sample_every")
        if not isinstance(n, int) or n < 1:
            raise UsageError(f"set: sample_every must be a positive integer, not {n!r}")
        probe.set_sample_every(n)
        if cmd.get("reset"):
            probe.reset_stats()
            self.pending.clear()
        if cmd.get("freeze"):  # the final read: no aggregate (nor record) changes any more
            probe.freeze()
        return {"type": "set", "sample_every": probe.sample_every}

    def drain(self) -> None:
        if self.probe is not None:
            self.pending += self.probe.drain_records()

    def handle(self, line: bytes) -> None:
        try:
            cmd = json.loads(line)
        except ValueError:
            self.send({"type": "error", "id": None, "message": "not a JSON line", "exit": 2})
            return
        if not isinstance(cmd, dict):
            self.send({"type": "error", "id": None, "message": "a command is a JSON object", "exit": 2})
            return
        cid = cmd.get("id")
        name = cmd.get("cmd")
        try:
            if name == "start":
                reply = self.start(cmd)
            elif name == "snapshot":
                reply = self.snapshot(cmd)
            elif name == "set":
                reply = self.set(cmd)
            elif name == "stop":
                if self.probe is not None:
                    self.send({**self.snapshot(cmd), "id": cid})
                self.done = True
                reply = {"type": "stopped"}
            else:
                raise UsageError(f"unknown command {name!r}; commands: start, snapshot, set, stop")
        except CniprofError as e:
            self.send({"type": "error", "id": cid, "message": str(e), "exit": 2 if isinstance(e, UsageError) else 3})
            return
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.exception("command %s failed", name)
            self.send({"type": "error", "id": cid, "message": f"{name}: {e}", "exit": 3})
            return
        self.send({**reply, "id": cid})

    # --- the loop ---
    def loop(self) -> None:
        buf = b""
        while not self.done:
            ready, _, _ = select.select([self.in_fd], [], [], POLL_S)
            if ready:
                chunk = os.read(self.in_fd, 65536)
                if not chunk:
                    log.info("stdin closed: stopping")
                    return
                buf += chunk
                while b"\n" in buf and not self.done:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        self.handle(line)
                if len(buf) > MAX_LINE:
                    self.send({"type": "error", "id": None, "message": "line too long", "exit": 2})
                    buf = b""
            self.drain()
            if os.getppid() != self.parent:
                log.info("parent %d died: stopping", self.parent)
                return

    def close(self) -> None:
        if self.probe is not None:
            self.probe.close()
            self.probe = None


@contextlib.contextmanager
def _signals() -> Iterator[None]:
    """SIGTERM and SIGINT unwind (detaching everything): SIGINT even when the agent was started with it ignored
    (a background job's children inherit that), since the protocol promises both."""
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with sigterm_interrupts():
            yield
    finally:
        signal.signal(signal.SIGINT, old_int)


def preflight() -> None:
    if os.geteuid() != 0:
        raise EnvironmentProblem("the agent needs root (BPF programs): run it privileged")
    if not os.path.exists(BTF_PATH):
        raise EnvironmentProblem(f"{BTF_PATH} is missing: cniprof needs a kernel built with CONFIG_DEBUG_INFO_BTF=y")
    object_path("hops")


class _TextOut:
    """A bytes writer over a text stream without a binary buffer (a test's captured stdout)."""

    def __init__(self, stream: IO[str]):
        self.stream = stream

    def write(self, data: bytes) -> None:
        self.stream.write(data.decode())

    def flush(self) -> None:
        self.stream.flush()


def main(node: str | None = None) -> int:
    """Run the agent on this process's stdin/stdout; the exit code (0, 2, 3, 130, 143). An environment that
    cannot trace (not root, no BTF, no objects) is an error object on stdout for the coordinator, then the usual
    one line on stderr (cli.main) and exit 2/3."""
    out = getattr(sys.stdout, "buffer", None) or _TextOut(sys.stdout)
    agent = Agent(node or socket.gethostname(), out)
    try:
        with _signals():
            try:
                preflight()
            except CniprofError as e:
                agent.send({"type": "error", "id": None, "message": str(e), "exit": e.exit_code})
                raise
            agent.send(hello(agent.node))
            try:
                agent.loop()
            finally:
                agent.close()
    except KeyboardInterrupt as interrupt:  # SIGTERM (interrupts.Terminated) or SIGINT
        return exit_status(interrupt)
    except BrokenPipeError:  # whoever read our stdout is gone: nothing left to tell
        return 0
    return 0
