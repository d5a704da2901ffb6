# SPDX-License-Identifier: Apache-2.0
"""Two runs at once. On one lab the second is refused in one line naming the first (its traffic, probes and
generator ports would mix with the first's; iperf3's port is fixed); on two labs (CNIPROF_LAB_ID) both run, and
each counts its own datagrams exactly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from cniprof.cni.topology import LAB_ID, Topology
from cniprof.lab import cleanup, saved

pytestmark = pytest.mark.root

CNIPROF = [sys.executable, "-m", "cniprof"]
COUNT = 23


def _started(argv: list[str], env: dict[str, str] | None = None, out: Path | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([*CNIPROF, *argv], stdout=subprocess.DEVNULL if out is None else out.open("w"),
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                            env={**os.environ, **(env or {})}, start_new_session=True)


def _wait(ready, proc: subprocess.Popen[str], what: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if proc.poll() is not None:
            pytest.fail(f"ended (rc {proc.returncode}) before {what}: {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"no {what} within {timeout:.0f} s")


def test_a_second_trace_on_the_same_lab_is_refused_naming_the_first(lab: Topology) -> None:
    first = _started(["trace", "--no-ui", "--duration", "30"])
    try:
        _wait(lambda: saved.holder() is not None and any(
            p.name() == "iperf3" for p in psutil.Process(first.pid).children(recursive=True)), first,
            "the first trace's generator")
        for argv in (["trace", "--no-ui", "--duration", "2"], ["lab", "inject", "offloads-off"], ["lab", "down"],
                     ["tune", "--try", "offloads-on", "--pairs", "1"]):
            second = subprocess.run([*CNIPROF, *argv], capture_output=True, text=True, timeout=120, check=False,
                                    stdin=subprocess.DEVNULL)
            assert second.returncode == 3, (argv, second.stderr)
            assert second.stderr.count("\n") == 1 and "Traceback" not in second.stderr, second.stderr
            assert f"the lab is in use by pid {first.pid} (cniprof trace --no-ui --duration 30)" in second.stderr
        assert first.poll() is None, "the first trace was disturbed"
        assert set(cleanup.list_lab_namespaces()) >= set(lab.namespaces())
    finally:
        os.killpg(first.pid, signal.SIGINT)
        assert first.wait(timeout=120) == 130
    assert saved.holder() is None


@pytest.mark.skipif(len(LAB_ID) > 8, reason="the second lab's id must stay short")
def test_two_traces_on_two_labs_at_once(lab: Topology, tmp_path: Path) -> None:
    """The session's lab and a second one (its own CNIPROF_LAB_ID): both traces run at the same time, both count
    exactly COUNT datagrams, and the second lab is removed by the trace that built it."""
    other = f"{LAB_ID or 'x'}two"
    runs = [_started(["trace", "--no-ui", "--traffic", "udp", "--count", str(COUNT), "--duration", "3", "--sample",
                      "1", "--export", str(tmp_path / name)], env=env)
            for name, env in (("one", {}), ("two", {"CNIPROF_LAB_ID": other}))]
    for p in runs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    for name in ("one", "two"):
        summary = json.loads((tmp_path / name / "summary.json").read_text())
        assert summary["end_to_end"]["packets"] == COUNT, name
    assert not [n for n in Path("/run/netns").iterdir() if n.name.startswith(f"cniprof_{other}-")]
