# SPDX-License-Identifier: Apache-2.0
"""prog_stats decodes run_time_ns/run_cnt at the kernel's BTF offsets, and agrees with bpftool on a live program.

The bpftool comparison is the independent check: a wrong offset would read some other counter (or zero) and
could not land between two bpftool readings of the same program.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator

import pytest

from cniprof.bpf import prog_stats
from cniprof.bpf.btf import vmlinux
from cniprof.bpf.build import object_path
from cniprof.bpf.libbpf import Object, prog_info
from cniprof.errors import EnvironmentProblem


def test_decodes_at_btf_offsets(monkeypatch: pytest.MonkeyPatch) -> None:
    layout = vmlinux().struct_layout("bpf_prog_info")
    buf = bytearray(vmlinux().sizeof("bpf_prog_info"))
    struct.pack_into("=Q", buf, layout["run_time_ns"][0], 123_456_789_012)
    struct.pack_into("=Q", buf, layout["run_cnt"][0], 42)
    monkeypatch.setattr(prog_stats, "prog_info", lambda fd, size: bytes(buf[:size]))
    assert prog_stats.prog_stats(3) == (123_456_789_012, 42)


def test_short_info_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prog_stats, "prog_info", lambda fd, size: bytes(64))
    with pytest.raises(EnvironmentProblem, match="too few"):
        prog_stats.prog_stats(3)


@pytest.fixture
def stats_enabled() -> Iterator[None]:
    """Statistics on through a BPF_ENABLE_STATS fd: kernel.bpf_stats_enabled, which is machine-wide, is never
    written (the kernel counts the fd's hold beside the sysctl and drops it when the fd closes)."""
    with prog_stats.RunTimeStats():
        yield


def _loopback_tcp(messages: int = 200) -> None:
    """A TCP exchange on loopback: every segment's skb ends in consume_skb on one side or the other."""
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            while conn.recv(65536):
                pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    with socket.create_connection(("127.0.0.1", port)) as c:
        for _ in range(messages):
            c.sendall(b"x" * 1000)
    t.join(5)
    srv.close()


def _bpftool_stats(prog_id: int) -> tuple[int, int]:
    out = subprocess.run(["bpftool", "--json", "prog", "show", "id", str(prog_id)], check=True,
                         capture_output=True, text=True).stdout
    doc = json.loads(out)
    return int(doc.get("run_time_ns", 0)), int(doc.get("run_cnt", 0))


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
@pytest.mark.skipif(shutil.which("bpftool") is None, reason="bpftool is not installed")
def test_live_program_matches_bpftool(stats_enabled: None) -> None:
    obj = Object(object_path("hops"))
    try:
        for name in obj.program_names():
            obj.set_autoload(name, name == "on_consume_skb")
        obj.load()
        fd = obj.prog_fd("on_consume_skb")
        assert prog_stats.prog_stats(fd) == (0, 0)  # fresh program, nothing ran yet
        obj.attach("on_consume_skb")
        _loopback_tcp()
        layout = vmlinux().struct_layout("bpf_prog_info")
        (prog_id,) = struct.unpack_from("=I", prog_info(fd, vmlinux().sizeof("bpf_prog_info")), layout["id"][0])
        first = prog_stats.prog_stats(fd)
        tool = _bpftool_stats(prog_id)
        last = prog_stats.prog_stats(fd)
    finally:
        obj.close()
    assert first[1] > 0 and first[0] > 0, first
    for i in (0, 1):
        assert first[i] <= tool[i] <= last[i], (first, tool, last)
