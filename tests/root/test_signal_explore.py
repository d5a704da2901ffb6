# SPDX-License-Identifier: Apache-2.0
"""Ctrl-C and SIGTERM for `lab explore` once its probes are attached and ping runs (polled, no fixed sleep): exit
130 (SIGINT) or 143 (SIGTERM) with one line on stderr, none of its processes left, every BPF program it held
unloaded, and the lab it reused still up exactly as it was. lab up, trace, run and tune are signalled phase by
phase in test_signals.py.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

import netpair
import owned
import psutil
import pytest
from test_tune_lab import lab_state

from cniprof.cni.topology import Topology, netns_inode
from cniprof.lab import saved, tunings
from cniprof.probes.hops_abi import ATTACH_POINT

pytestmark = pytest.mark.root

CNIPROF = [sys.executable, "-m", "cniprof"]
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
    "lab explore": Case(["lab", "explore", "--traffic", "ping", "--count", "600"],
                        lambda pid: _holds(pid, tuple(ATTACH_POINT)) and _children_named(pid, "ping"),
                        "explore's links attached, ping running"),
}


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["ctrl-c", "sigterm"])
@pytest.mark.parametrize("command", list(CASES))
def test_signal_cleans_up(lab: Topology, command: str, signum: int, status: int) -> None:
    case = CASES[command]
    argv = case.argv
    inodes = {n: netns_inode(n) for n in lab.namespaces()}
    state = _settings()
    with netpair.sigint_not_ignored():
        proc = subprocess.Popen([*CNIPROF, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err, children, programs = owned.signal_when(proc, lambda: case.ready(proc.pid), case.what, signum)
    assert proc.returncode == status, err
    what = "interrupted" if signum == signal.SIGINT else "terminated"
    assert "Traceback" not in err and err.splitlines()[-1] == f"cniprof: {what}; everything cniprof created was removed"
    assert err.count("\n") == 1, err
    assert not owned.settle(lambda: owned.alive(children)), "processes of the command left"
    assert not owned.settle(owned.stray_processes), "processes of this session left"
    assert not owned.settle(lambda: owned.loaded_programs(programs)), "its BPF programs are still loaded"
    # the lab it reused is still up, untouched: same namespaces, same settings
    assert {n: netns_inode(n) for n in lab.namespaces()} == inodes and saved.load() == lab
    assert _settings() == state
