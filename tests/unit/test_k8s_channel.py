# SPDX-License-Identifier: Apache-2.0
"""The exec channel to an agent pod: the real kubernetes client's exec (kubernetes.stream over websocket-client)
with only the websocket connection replaced (tests/unit/k8s_api.py), its far end a real process reading
stdin and writing stdout/stderr. What must hold: whole JSON lines both ways, None on silence, the lines sent
before the stream closed still delivered, then ChannelClosed naming the exit status and the last stderr line; a
broken connection; a refused upgrade (403, 404)."""

from __future__ import annotations

import sys
import time

import pytest
from k8s_api import ExecProcess, FakeApiServer, install_exec, pod

from cniprof.k8s.channel import ChannelClosed, ExecChannel
from cniprof.k8s.cluster import ApiRefused, Cluster

# a line-oriented process: answers {"echo": obj} per line, "bye" -> exit 3 with a message on stderr;
# stdin EOF -> a last line, then exit 0
PEER = r"""
import json, sys
print(json.dumps({"type": "hello", "pid": 1}), flush=True)
for line in sys.stdin:
    obj = json.loads(line)
    if obj.get("cmd") == "bye":
        print("agent: asked to fail", file=sys.stderr, flush=True)
        sys.exit(3)
    print(json.dumps({"echo": obj}), flush=True)
print(json.dumps({"type": "stopped"}), flush=True)
"""


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> FakeApiServer:
    fake = FakeApiServer()
    fake.add_pod(pod("cniprof", "agent-x", "node-a", "192.0.2.10", "u1", ("agent",)))
    fake.exec_handler = lambda path, query: ExecProcess([sys.executable, "-c", PEER])
    install_exec(fake, monkeypatch)
    yield fake
    for s in fake.sessions:
        if s.process.proc.poll() is None:
            s.process.proc.kill()
        s.process.proc.wait(timeout=10)


def _open(server: FakeApiServer) -> ExecChannel:
    cluster = Cluster(server.client())
    ws = cluster.exec_stream("cniprof", "agent-x", "agent", ["cniprof", "agent", "--node", "node-a"], stdin=True)
    return ExecChannel("node-a", ws, "cniprof/agent-x")


def test_lines_both_ways_and_the_exec_request(server: FakeApiServer) -> None:
    ch = _open(server)
    (req,) = server.requests
    assert req.path == "/api/v1/namespaces/cniprof/pods/agent-x/exec"
    assert req.query["command"] == ["cniprof", "agent", "--node", "node-a"]
    assert req.query["container"] == ["agent"] and req.query["stdin"] == ["true"] and req.query["tty"] == ["false"]
    assert req.headers["authorization"] == "Bearer test-token"
    assert ch.recv(10) == {"type": "hello", "pid": 1}
    big = {"cmd": "start", "spec": {"pods": ["x" * 100] * 2000}}  # 200 kB: many frames, one line
    ch.send(big)
    ch.send({"cmd": "snapshot", "id": 2})
    assert ch.recv(10) == {"echo": big}
    assert ch.recv(10) == {"echo": {"cmd": "snapshot", "id": 2}}
    t0 = time.monotonic()
    assert ch.recv(0.3) is None  # silence: None after the timeout, not before
    assert time.monotonic() - t0 >= 0.29
    ch.close()  # stdin closed (v5): the peer answers its last line and exits 0
    assert server.sessions[0].process.proc.wait(timeout=5) == 0


def test_lines_sent_before_the_close_arrive_then_the_reason(server: FakeApiServer) -> None:
    ch = _open(server)
    assert ch.recv(10)["type"] == "hello"
    ch.send({"cmd": "ping", "id": 1})
    ch.send({"cmd": "bye"})
    assert ch.recv(10) == {"echo": {"cmd": "ping", "id": 1}}
    with pytest.raises(ChannelClosed, match=r"agent in cniprof/agent-x exited with status 3: agent: asked to fail"):
        while True:
            ch.recv(10)
    with pytest.raises(ChannelClosed):
        ch.send({"cmd": "snapshot"})
    ch.close()  # idempotent after the end


def test_stdin_eof_delivers_the_last_lines_and_success(server: FakeApiServer) -> None:
    ch = _open(server)
    assert ch.recv(10)["type"] == "hello"
    ch.ws.close_channel(0)
    assert ch.recv(10) == {"type": "stopped"}
    with pytest.raises(ChannelClosed, match="exited with status 0"):
        ch.recv(10)


def test_a_broken_connection_is_a_closed_channel(server: FakeApiServer) -> None:
    ch = _open(server)
    assert ch.recv(10)["type"] == "hello"
    session = server.sessions[0]
    session.break_after = session.frames_read  # the connection drops at the next frame
    with pytest.raises(ChannelClosed, match="exec stream to cniprof/agent-x closed"):
        ch.send({"cmd": "snapshot", "id": 1})
        ch.recv(10)
    ch.close()
    # the agent's stdin was closed by the hang-up: it stops by its own rule
    assert server.sessions[0].process.proc.wait(timeout=5) == 0


@pytest.mark.parametrize(("code", "words"), [(403, "forbidden by the API server"), (404, "not found")])
def test_refused_exec(server: FakeApiServer, code: int, words: str) -> None:
    server.exec_refuse[r".*/exec"] = code
    with pytest.raises(ApiRefused, match=words) as info:
        _open(server)
    assert "exec cniprof agent --node node-a in cniprof/agent-x (agent)" in str(info.value)
    assert info.value.exit_code == (3 if code == 403 else 2)
