# SPDX-License-Identifier: Apache-2.0
"""Ctrl-C and SIGTERM for every long-running command, as a user (or systemd, Kubernetes, `timeout`) sends them:
once the command has attached its probes and started its generators (polled, no fixed sleep), one signal; then
exit 130 (SIGINT) or 143 (SIGTERM) with one line on stderr, none of its processes left, every BPF program it
held unloaded, and the lab it reused still up exactly as it was (tune: every tuning reverted).

`trace` without --cpu (and while the lab is being built) is in test_trace_cli.py; `trace --path pod-to-service`
in test_trace_services.py. Add a command here when it gains a long-running mode.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import netpair
import owned
import psutil
import pytest
from test_tune_lab import lab_state

from cniprof.cni.topology import Topology, netns_inode
from cniprof.lab import saved, tunings
from cniprof.probes.cpu_abi import PROGRAMS as CPU_PROGRAMS
from cniprof.probes.hops_abi import ATTACH_POINT

pytestmark = pytest.mark.root

CNIPROF = [sys.executable, "-m", "cniprof"]
STUDY = """\
version: 1
name: signal-test
models: [flannel:vxlan]
paths: [cross-node]
repetitions: 3
duration_s: 30
generators:
  - {name: tcp, tool: iperf3}
variants:
  - {name: short-queues, tunings: {txqueuelen: 500}}
"""


def _settings() -> dict[object, object]:
    """What a tuning or a study variant changes on every lab device: MTU, offloads (lab_state) and txqueuelen."""
    topo = saved.load()
    assert topo is not None
    queues = {(d.netns, d.name): tunings.link_info(tunings.Dev(d.netns, d.name, d.role))["txqlen"]
              for d in topo.devices()}
    return {"features": lab_state(), "txqlen": queues}


def _children_named(pid: int, name: str) -> bool:
    for child in owned.descendants(pid):
        try:
            if psutil.Process(child).name() == name:
                return True
        except psutil.NoSuchProcess:
            continue
    return False


def _holds(pid: int, programs: tuple[str, ...]) -> bool:
    return bool(owned.held_links(programs, pids=[pid]))


@dataclass
class Case:
    argv: list[str]
    ready: Callable[[int], bool]  # given the command's pid: it is doing its work now
    what: str


CASES = {
    "trace --cpu": Case(["trace", "--cpu", "--duration", "60", "--no-ui"],
                        lambda pid: _holds(pid, tuple(ATTACH_POINT)) and _holds(pid, CPU_PROGRAMS)
                        and _children_named(pid, "iperf3"), "hop and CPU links attached, iperf3 running"),
    "run": Case(["run", "{scenario}", "--output", "{out}"],
                lambda pid: _holds(pid, tuple(ATTACH_POINT)) and _children_named(pid, "iperf3"),
                "a traced study run with iperf3 running"),
    "tune": Case(["tune", "--try", "offloads-on", "--pairs", "3", "--duration", "20", "--output", "{out}"],
                 lambda pid: _children_named(pid, "iperf3"), "a tune run with iperf3 running"),
    "lab explore": Case(["lab", "explore", "--traffic", "ping", "--count", "600"],
                        lambda pid: _holds(pid, tuple(ATTACH_POINT)) and _children_named(pid, "ping"),
                        "explore's links attached, ping running"),
}


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["ctrl-c", "sigterm"])
@pytest.mark.parametrize("command", list(CASES))
def test_signal_cleans_up(lab: Topology, tmp_path: Path, command: str, signum: int, status: int) -> None:
    case = CASES[command]
    (tmp_path / "study.yaml").write_text(STUDY)
    argv = [a.format(scenario=tmp_path / "study.yaml", out=tmp_path / "out") for a in case.argv]
    inodes = {n: netns_inode(n) for n in lab.namespaces()}
    state = _settings()
    with netpair.sigint_not_ignored():
        proc = subprocess.Popen([*CNIPROF, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        owned.wait_for(lambda: proc.poll() is not None or case.ready(proc.pid), case.what, timeout_s=120)
        assert proc.poll() is None, proc.communicate()
        children = owned.descendants(proc.pid)
        programs = owned.held_programs(pids=[proc.pid])
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == status, err
    what = "interrupted" if signum == signal.SIGINT else "terminated"
    # one line says so (after the progress lines `run` prints on stderr while it works)
    assert "Traceback" not in err and err.splitlines()[-1] == f"cniprof: {what}; everything cniprof created was removed"
    if command != "run":
        assert err.count("\n") == 1, err
    assert not owned.settle(lambda: owned.alive(children)), "processes of the command left"
    assert not owned.settle(owned.stray_processes), "processes of this session left"
    assert not owned.settle(lambda: owned.loaded_programs(programs)), "its BPF programs are still loaded"
    # the lab it reused is still up, untouched: same namespaces, same settings
    assert {n: netns_inode(n) for n in lab.namespaces()} == inodes and saved.load() == lab
    assert _settings() == state
    if command == "run":
        assert json.loads((tmp_path / "out" / "metadata.json").read_text())["status"] == "interrupted"
