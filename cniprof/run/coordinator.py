# SPDX-License-Identifier: Apache-2.0
"""One agent per node of a cross-node trace, merged into one snapshot (ARCHITECTURE.md "Node agents").

The coordinator speaks the agent protocol through Channels (a local child process in the lab, a pod exec stream
on a cluster), keeps every record the agents send, and offers what `trace.run` uses of a HopProbe: start,
snapshot (merged, with the wire hop timed across the two clocks), counter, set_sample_every, reset_stats, close.
An agent that is lost mid-run (killed, its stream broken) is named in `lost`; its last snapshot and records stay
in the merge, and the others carry on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cniprof.analysis import clock, node_merge
from cniprof.analysis.hops import direction_label
from cniprof.cni.model import Chain
from cniprof.cni.topology import Pod
from cniprof.errors import CniprofError, EnvironmentProblem, UsageError
from cniprof.probes import plan as planning
from cniprof.run.channel import Channel, ChannelClosed, LocalChannel, local_env

log = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0  # interpreter start, BTF parsing and attach on a busy 2-CPU machine
REPLY_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
# tracked packets per second over all directions under --sample auto: every tracked packet is recorded on both
# nodes (one record on the source, two on the destination), so this keeps each agent well under its
# max_records_per_s while leaving thousands of packets per second for the intra-node histograms
TRACKED_PER_S = 1500.0
MAX_RECORDS_PER_S = 5000


@dataclass
class AgentState:
    node: str
    channel: Channel
    pid: int | None = None
    snapshot: dict[str, Any] | None = None
    snapshot_at: float | None = None
    records: list[np.ndarray] = field(default_factory=list)
    records_total: dict[str, int] = field(default_factory=dict)
    programs: list[str] = field(default_factory=list)
    prog_ids: list[int] = field(default_factory=list)
    lost: str | None = None
    lost_at: float | None = None


class Coordinator:
    """Node agents behind the face of a HopProbe. specs: node -> the start spec of its agent (node order matters:
    the first node's points come first in the merged snapshot)."""

    tracked_budget_per_s = TRACKED_PER_S

    def __init__(self, channels: Mapping[str, Channel], specs: Mapping[str, dict[str, Any]],
                 crossings: tuple[clock.Crossing, ...], wire: Mapping[int, node_merge.WireLabel],
                 labels: Mapping[int, str]):
        self.agents = {node: AgentState(node, channels[node]) for node in specs}
        self.specs = dict(specs)
        self.crossings = crossings
        self.wire = dict(wire)
        self.labels = dict(labels)
        self.sample_every = max(int(s.get("sample_every", 1)) for s in specs.values()) if specs else 1
        self.attached: list[str] = []
        self.started_at: float | None = None
        self._next_id = 0
        self.last_clock: clock.ClockResult | None = None

    # --- the protocol ---
    def _id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _lose(self, a: AgentState, reason: str) -> None:
        if a.lost is None:
            a.lost = reason
            a.lost_at = time.monotonic() - self.started_at if self.started_at else 0.0
            log.warning("agent on %s lost: %s", a.node, reason)

    def _await(self, a: AgentState, cid: int, timeout: float, kinds: tuple[str, ...]) -> dict[str, Any] | None:
        """The reply to command `cid` (error replies raise), None when the agent was lost or timed out."""
        deadline = time.monotonic() + timeout
        while a.lost is None:
            left = deadline - time.monotonic()
            if left <= 0:
                self._lose(a, f"no reply within {timeout:.0f} s")
                return None
            try:
                msg = a.channel.recv(left)
            except ChannelClosed as e:
                self._lose(a, str(e))
                return None
            if msg is None:
                continue
            if msg.get("type") == "hello":
                a.pid = msg.get("pid")
                continue
            if msg.get("type") == "error" and msg.get("id") in (cid, None):
                cls = UsageError if msg.get("exit") == 2 else EnvironmentProblem
                raise cls(f"agent on {a.node}: {msg.get('message')}")
            if msg.get("type") == "snapshot":
                self._take(a, msg)
            if msg.get("id") == cid and msg.get("type") in kinds:
                return msg
        return None

    def _take(self, a: AgentState, msg: dict[str, Any]) -> None:
        a.snapshot = msg.get("snapshot")
        a.snapshot_at = time.monotonic() - self.started_at if self.started_at else 0.0
        recs = clock.decode(msg.get("records") or {"format": clock.RECORD_FORMAT, "count": 0, "data": ""})
        if len(recs):
            a.records.append(recs)
        a.records_total = dict(msg.get("records_total") or {})

    def _send(self, a: AgentState, cmd: dict[str, Any]) -> int | None:
        cid = self._id()
        try:
            a.channel.send({**cmd, "id": cid})
        except ChannelClosed as e:
            self._lose(a, str(e))
            return None
        return cid

    def _round(self, cmd: dict[str, Any], kinds: tuple[str, ...], timeout: float = REPLY_TIMEOUT_S) -> None:
        """Send a command to every live agent, then collect every reply."""
        sent = {node: self._send(a, cmd) for node, a in self.agents.items() if a.lost is None}
        for node, cid in sent.items():
            if cid is not None:
                self._await(self.agents[node], cid, timeout, kinds)

    # --- HopProbe's face ---
    def start(self) -> None:
        self.started_at = time.monotonic()
        sent = {node: self._send(a, {"cmd": "start", "spec": self.specs[node]}) for node, a in self.agents.items()}
        for node, cid in sent.items():
            a = self.agents[node]
            reply = self._await(a, cid, START_TIMEOUT_S, ("started",)) if cid is not None else None
            if reply is None:
                raise EnvironmentProblem(f"the agent on {node} did not start: {a.lost}")
            a.programs = list(reply.get("programs") or ())
            a.prog_ids = [int(i) for i in reply.get("prog_ids") or ()]
        self.attached = sorted({p for a in self.agents.values() for p in a.programs})
        self.started_at = time.monotonic()

    def snapshot(self) -> dict[str, Any]:
        self._round({"cmd": "snapshot"}, ("snapshot",))
        return self.merged()

    def counter(self, name: str) -> int:
        """A counter over the nodes, fresh. "candidates": each packet is a candidate on both of its nodes (at
        the source pod and at the destination's first point), so the sum is halved to count packets."""
        self._round({"cmd": "snapshot"}, ("snapshot",))
        total = sum(int((a.snapshot or {}).get("counters", {}).get(name, 0)) for a in self.agents.values())
        return total // 2 if name == "candidates" else total

    def set_sample_every(self, n: int) -> None:
        self.sample_every = max(1, int(n))
        self._round({"cmd": "set", "sample_every": self.sample_every}, ("set",))

    def freeze(self) -> None:
        """Every agent stops its aggregates (and records) from changing, for one consistent final read."""
        self._round({"cmd": "set", "sample_every": self.sample_every, "freeze": True}, ("set",))

    def reset_stats(self) -> None:
        self._round({"cmd": "set", "sample_every": self.sample_every, "reset": True}, ("set",))
        for a in self.agents.values():
            a.records.clear()
        self.started_at = time.monotonic()

    def close(self) -> None:
        """Stop every live agent (its final snapshot is kept), then close every channel."""
        try:
            self._round({"cmd": "stop"}, ("stopped",), STOP_TIMEOUT_S)
        finally:
            for a in self.agents.values():
                try:
                    a.channel.close()
                except OSError as e:  # the channel's own cleanup failing must not hide the others'
                    log.warning("closing the channel to %s: %s", a.node, e)

    def __enter__(self) -> Coordinator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- merging ---
    def records(self) -> dict[str, np.ndarray]:
        out = {}
        for node, a in self.agents.items():
            out[node] = np.concatenate(a.records) if a.records else np.zeros(0, clock.RECORD_DTYPE)
        return out

    def solve(self) -> clock.ClockResult:
        self.last_clock = clock.solve(clock.frame(self.records()), self.crossings)
        return self.last_clock

    def merged(self) -> dict[str, Any]:
        snaps = {node: a.snapshot for node, a in self.agents.items() if a.snapshot is not None}
        result = self.solve()
        sides = {c.dir: (c.src_node, c.dst_node) for c in self.crossings}
        snap = node_merge.merge(snaps, sides, self.wire, result if result.ok else None)
        snap["clock"] = self.clock_summary()
        snap["agents"] = self.agents_summary()
        return snap

    def clock_summary(self) -> dict[str, Any]:
        result = self.last_clock if self.last_clock is not None else self.solve()
        return clock.summary(result, self.labels, {n: a.records_total for n, a in self.agents.items()})

    def agents_summary(self) -> dict[str, Any]:
        return {n: {"pid": a.pid, "lost": a.lost, "lost_at_s": None if a.lost_at is None else round(a.lost_at, 2),
                    "last_snapshot_s": None if a.snapshot_at is None else round(a.snapshot_at, 2),
                    "prog_ids": a.prog_ids}
                for n, a in self.agents.items()}

    @property
    def lost(self) -> dict[str, str]:
        return {n: a.lost for n, a in self.agents.items() if a.lost is not None}


# --- the lab: one local agent process per node -------------------------------------------------------------------


def _direction(d: int, src: Pod, dst: Pod, src_ip: str, dst_ip: str, side: str) -> dict[str, Any]:
    return {"dir": d, "src_pod": src.name, "dst_pod": dst.name, "src_ip": src_ip, "dst_ip": dst_ip, "side": side}


def specs_for_pair(a: Pod, b: Pod, plan_dirs: tuple[Any, ...], *, cni: str, path: str, events: tuple[str, ...],
                   topology: str = "lab", sample_every: int = 1, stale_ms: float = 1000.0,
                   test_clock_offset_ns: int = 0) -> dict[str, dict[str, Any]]:
    """The start spec of each node's agent for a pod pair on two nodes (a's node first). plan_dirs: the single
    tracer's plan directions (direction 0's dst_ip is the ClusterIP for pod-to-service: the address the client's
    packets carry on a's node; on b's node they carry b's own IP, after DNAT). test_clock_offset_ns: TEST ONLY,
    added to every record time of b's node's agent."""
    if a.node == b.node:
        raise UsageError(f"{a.name} and {b.name} share node {a.node}: per-node agents trace paths between nodes")
    fwd = next(d for d in plan_dirs if d.dir == 0)
    common = {"topology": topology, "cni": cni, "path": path, "events": list(events), "sample_every": sample_every,
              "stale_ms": stale_ms, "max_records_per_s": MAX_RECORDS_PER_S}
    return {
        a.node: {**common, "node": a.node, "pods": [{"name": a.name, "ip": a.ip, "netns": a.netns}],
                 "directions": [_direction(0, a, b, a.ip, fwd.dst_ip, "src"), _direction(1, b, a, b.ip, a.ip, "dst")],
                 "test_clock_offset_ns": 0},
        b.node: {**common, "node": b.node, "pods": [{"name": b.name, "ip": b.ip, "netns": b.netns}],
                 "directions": [_direction(0, a, b, a.ip, b.ip, "dst"), _direction(1, b, a, b.ip, a.ip, "src")],
                 "test_clock_offset_ns": int(test_clock_offset_ns)},
    }


def for_pair(a: Pod, b: Pod, chain: Chain, plan_dirs: tuple[Any, ...], *, cni: str, path: str,
             events: tuple[str, ...], sample_every: int = 1, stale_ms: float = 1000.0, test_clock_offset_ns: int = 0,
             channel: Callable[[str], Channel] | None = None, topology: str = "lab") -> Coordinator:
    """A coordinator for a cross-node pod pair, one agent per node (default: a local `cniprof agent` each)."""
    specs = specs_for_pair(a, b, plan_dirs, cni=cni, path=path, events=events, sample_every=sample_every,
                           topology=topology,
                           stale_ms=stale_ms, test_clock_offset_ns=test_clock_offset_ns)
    crossings = (clock.Crossing(0, a.node, b.node), clock.Crossing(1, b.node, a.node))
    wire = {d: node_merge.WireLabel(*planning.wire_step(chain, d, events)) for d in (0, 1)}
    labels = {0: direction_label({"src_pod": a.name, "dst_pod": b.name}),
              1: direction_label({"src_pod": b.name, "dst_pod": a.name})}
    make = channel or (lambda node: LocalChannel(node, env=local_env()))
    channels: dict[str, Channel] = {}
    try:
        for node in specs:
            channels[node] = make(node)
    except (OSError, CniprofError):
        for ch in channels.values():
            ch.close()
        raise
    return Coordinator(channels, specs, crossings, wire, labels)
