# SPDX-License-Identifier: Apache-2.0
"""The agent protocol without root: the agent's command handling, the local channel's view of a dying agent, and
the coordinator driving agents replayed from a recorded run (one of them lost mid-run)."""

from __future__ import annotations

import io
import json
import signal
import sys
import textwrap
from typing import Any

import pytest
from agents_data import recorded

from cniprof.analysis import clock, path_check
from cniprof.analysis.node_merge import WireLabel
from cniprof.errors import UsageError
from cniprof.run import agent
from cniprof.run.channel import ChannelClosed, LocalChannel, exit_reason
from cniprof.run.coordinator import Coordinator

# --- the agent's side ------------------------------------------------------------------------------------------------


def _replies(lines: list[bytes]) -> tuple[list[dict], agent.Agent]:
    out = io.BytesIO()
    a = agent.Agent("node1", out)
    for line in lines:
        a.handle(line)
    return [json.loads(x) for x in out.getvalue().splitlines()], a


def test_commands_before_start_and_bad_lines_get_one_line_errors() -> None:
    replies, a = _replies([b"{", b"[1]", b'{"cmd": "snapshot", "id": 3}', b'{"cmd": "set", "id": 4, "sample_every": 2}',
                           b'{"cmd": "jump", "id": "x"}', b'{"cmd": "stop", "id": 5}'])
    assert replies == [
        {"type": "error", "id": None, "message": "not a JSON line", "exit": 2},
        {"type": "error", "id": None, "message": "a command is a JSON object", "exit": 2},
        {"type": "error", "id": 3, "message": "not started: send start first", "exit": 2},
        {"type": "error", "id": 4, "message": "not started: send start first", "exit": 2},
        {"type": "error", "id": "x", "message": "unknown command 'jump'; commands: start, snapshot, set, stop",
         "exit": 2},
        {"type": "stopped", "id": 5},
    ]
    assert a.done


def test_a_start_spec_is_checked_before_anything_is_loaded() -> None:
    replies, a = _replies([b'{"cmd": "start", "id": 1}', b'{"cmd": "start", "id": 2, "spec": {"cni": "flannel"}}',
                           b'{"cmd": "start", "id": 3, "spec": {"node": "n", "cni": "nope"}}'])
    assert replies[0] == {"type": "error", "id": 1, "message": "start: spec is missing or not an object", "exit": 2}
    assert replies[1] == {"type": "error", "id": 2, "message": "start: spec.node is missing or not a string", "exit": 2}
    assert replies[2]["id"] == 3 and replies[2]["exit"] == 2 and "nope" in replies[2]["message"]
    assert a.probe is None


def test_hello() -> None:
    h = agent.hello("node7")
    assert h["type"] == "hello" and h["protocol"] == 1 and h["node"] == "node7"
    assert {"pid", "kernel", "arch", "cniprof_version"} <= set(h)


# --- the channel ---------------------------------------------------------------------------------------------------


def _fake_agent(body: str) -> LocalChannel:
    code = "import json, sys, time\nprint(json.dumps({'type': 'hello', 'protocol': 1}), flush=True)\n" + body
    return LocalChannel("node9", argv=[sys.executable, "-c", textwrap.dedent(code)])


def test_a_killed_agent_is_a_closed_channel_naming_the_signal() -> None:
    ch = _fake_agent("time.sleep(60)")
    try:
        assert ch.recv(30) == {"type": "hello", "protocol": 1}
        assert ch.recv(0.05) is None
        ch.proc.send_signal(signal.SIGKILL)
        with pytest.raises(ChannelClosed, match="killed by SIGKILL"):
            ch.recv(30)
        with pytest.raises(ChannelClosed, match="killed by SIGKILL"):
            ch.send({"cmd": "snapshot", "id": 1})
    finally:
        ch.close()


def test_an_agent_that_exits_names_its_status_and_last_words() -> None:
    ch = _fake_agent("sys.stdin.readline()\nprint('no BTF here', file=sys.stderr)\nsys.exit(3)")
    try:
        assert ch.recv(30)["type"] == "hello"
        ch.send({"cmd": "start", "id": 1})
        with pytest.raises(ChannelClosed, match="exited with status 3: no BTF here"):
            ch.recv(30)
    finally:
        ch.close()


def test_close_ends_an_agent_that_ignores_stdin() -> None:
    ch = _fake_agent("import signal\nsignal.signal(signal.SIGTERM, signal.SIG_DFL)\ntime.sleep(60)")
    assert ch.recv(30)["type"] == "hello"
    ch.close()
    assert ch.proc.returncode == -signal.SIGTERM


def test_exit_reason() -> None:
    assert exit_reason(-9) == "killed by SIGKILL"
    assert exit_reason(0, ["", "bye", ""]) == "exited with status 0: bye"
    assert exit_reason(None) == "its output stream closed"


# --- the coordinator against agents replayed from a recorded run --------------------------------------------------------


class Replay:
    """An agent that answers from a recorded run: its snapshot and all its records in the first snapshot reply."""

    def __init__(self, node: str, rec: dict[str, Any]):
        self.node = node
        self.rec = rec
        self.inbox: list[dict] = [{"type": "hello", "protocol": 1, "pid": 4242}]
        self.sent_records = False
        self.dead: str | None = None
        self.commands: list[dict] = []

    def send(self, message: dict) -> None:
        if self.dead:
            raise ChannelClosed(self.dead)
        self.commands.append(dict(message))
        cid, cmd = message["id"], message["cmd"]
        if cmd == "start":
            self.inbox.append({"type": "started", "id": cid, "programs": ["on_dev_queue"], "prog_ids": [7]})
        elif cmd in ("snapshot", "stop"):
            records = self.rec["records"] if not self.sent_records else clock.encode(b"")
            self.sent_records = True
            self.inbox.append({"type": "snapshot", "id": cid, "snapshot": self.rec["snapshot"], "records": records,
                               "records_total": {"sent": 900, "rate_limited": 0, "ring_full": 0}})
            if cmd == "stop":
                self.inbox.append({"type": "stopped", "id": cid})
        elif cmd == "set":
            self.inbox.append({"type": "set", "id": cid, "sample_every": message["sample_every"]})

    def recv(self, timeout: float) -> dict | None:
        if self.dead:
            raise ChannelClosed(self.dead)
        return self.inbox.pop(0) if self.inbox else None

    def close(self) -> None:
        self.closed = True


def _coordinator() -> tuple[Coordinator, dict[str, Replay]]:
    rec = recorded()
    chans = {n: Replay(n, v) for n, v in rec["nodes"].items()}
    specs = {n: {"node": n, "sample_every": 1} for n in chans}
    coord = Coordinator(chans, specs, tuple(clock.Crossing(**c) for c in rec["crossings"]),
                        {int(d): WireLabel(**w) for d, w in rec["wire"].items()},
                        {int(d): v for d, v in rec["labels"].items()})
    return coord, chans


def test_coordinator_merges_the_replayed_agents() -> None:
    coord, chans = _coordinator()
    coord.start()
    assert coord.attached == ["on_dev_queue"]
    snap = coord.snapshot()
    assert snap["clock"]["status"] == "ok" and abs(snap["clock"]["offset_ns"] - 5_000_000) <= 5_000
    assert sum(1 for h in snap["hops"] if h.get("wire")) == 2
    assert path_check.check(snap).ok
    assert snap["agents"]["node1"]["pid"] == 4242 and snap["agents"]["node1"]["lost"] is None
    coord.set_sample_every(4)
    coord.reset_stats()  # records of the old rate are gone
    assert coord.records()["node1"].size == 0
    assert [c["cmd"] for c in chans["node2"].commands] == ["start", "snapshot", "set", "set"]
    assert chans["node2"].commands[-1] == {"cmd": "set", "sample_every": 4, "reset": True, "id": 8}
    coord.close()
    assert all(c.closed for c in chans.values())


def test_a_lost_agent_is_named_and_its_last_snapshot_kept() -> None:
    coord, chans = _coordinator()
    coord.start()
    coord.snapshot()
    chans["node2"].dead = "killed by SIGKILL"
    snap = coord.snapshot()
    assert coord.lost == {"node2": "killed by SIGKILL"}
    assert snap["agents"]["node2"]["lost"] == "killed by SIGKILL"
    assert {p["node"] for p in snap["points"]} == {"node1", "node2"}
    assert snap["clock"]["status"] == "ok"  # the records that arrived before the loss still time the wire
    coord.close()
    assert all(c.closed for c in chans.values())
    assert [c["cmd"] for c in chans["node1"].commands][-1] == "stop"


def test_an_agent_error_names_the_node() -> None:
    coord, chans = _coordinator()
    chans["node2"].inbox.append({"type": "error", "id": 2, "message": "no pod with IP 10.0.0.9 on this node",
                                 "exit": 2})
    with pytest.raises(UsageError, match="agent on node2: no pod with IP 10.0.0.9 on this node"):
        coord.start()
    coord.close()
