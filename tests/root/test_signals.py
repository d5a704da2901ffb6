# SPDX-License-Identifier: Apache-2.0
"""Ctrl-C (SIGINT to the process group, as a terminal sends it) and SIGTERM (to the process, as `timeout`,
systemd and Kubernetes send it) at each phase of `lab up`, `trace` (export included), `run` and `tune`.

Each command runs in its own session and is watched while it runs: its descendant processes, the BPF links and
programs it holds (by id, from its own file descriptors' fdinfo: never by machine-wide names) and the lab's
namespaces. The moment is reached by polling for what the phase creates (a namespace, a link, a generator
process, the export's staging directory, a tuning in a device's settings), never by a fixed sleep; the process
is then stopped (SIGSTOP), the phase checked to still hold, signalled, and continued, so the signal lands inside
the phase. Afterwards: exit status 130 or 143, one line on stderr, every process, link and program it had gone,
namespaces gone if it built the lab (else the lab as it was), no half-written file, no tuning left applied.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from cniprof.cni.topology import Topology
from cniprof.lab import cleanup, saved

pytestmark = pytest.mark.root

CNIPROF = [sys.executable, "-m", "cniprof"]
SIGNALS = [signal.SIGINT, signal.SIGTERM]
PHASE_TIMEOUT_S = 120.0  # a busy 2-CPU machine builds a lab in ~5-30 s
SCENARIO = ("version: 1\nname: signals\nmodels: [flannel]\npaths: [cross-node]\nrepetitions: 2\nduration_s: 8\n"
            "generators: [{name: tcp, tool: iperf3}]\n")


def lab_namespaces() -> set[str]:
    return set(cleanup.list_lab_namespaces())


def _bpf_ids(pid: int) -> tuple[set[int], set[int]]:
    """(link ids, program ids) of the BPF objects process pid holds open."""
    links, progs = set(), set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return links, progs
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target not in ("anon_inode:bpf_link", "anon_inode:bpf-prog"):
                continue
            info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        for line in info.splitlines():
            key, _, value = line.partition(":")
            if key == "link_id":
                links.add(int(value))
            elif key == "prog_id" and target == "anon_inode:bpf-prog":
                progs.add(int(value))
    return links, progs


def _bpf_exists(kind: str, ident: int) -> bool:
    return subprocess.run(["bpftool", kind, "show", "id", str(ident)], capture_output=True,
                          check=False).returncode == 0


@dataclass
class Watched:
    """A cniprof command in its own session, and everything it was seen to own while it ran."""

    argv: list[str]
    proc: subprocess.Popen[bytes]
    out: Path
    err: Path
    processes: dict[int, float] = field(default_factory=dict)  # pid -> create time (a recycled pid differs)
    links: set[int] = field(default_factory=set)
    progs: set[int] = field(default_factory=set)

    @classmethod
    def start(cls, *argv: str, tmp: Path) -> Watched:
        out, err = tmp / "stdout", tmp / "stderr"
        with out.open("wb") as o, err.open("wb") as e:
            proc = subprocess.Popen([*CNIPROF, *argv], stdout=o, stderr=e, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        return cls(list(argv), proc, out, err)

    def look(self) -> None:
        try:
            me = psutil.Process(self.proc.pid)
            family = [me, *me.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for p in family:
            try:
                self.processes.setdefault(p.pid, p.create_time())
            except psutil.NoSuchProcess:
                continue
        links, progs = _bpf_ids(self.proc.pid)
        self.links |= links
        self.progs |= progs

    def wait_for(self, what: str, ready: Callable[[], bool], timeout: float = PHASE_TIMEOUT_S,
                 every: float = 0.02) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.look()
            if ready():
                return
            if self.proc.poll() is not None:
                pytest.fail(f"cniprof {' '.join(self.argv)} ended (rc {self.proc.returncode}) before {what}:\n"
                            f"{self.err.read_text()[-2000:]}")
            time.sleep(every)
        self.proc.kill()
        pytest.fail(f"cniprof {' '.join(self.argv)}: no {what} within {timeout:.0f} s")

    def signal_in(self, sig: int, still: Callable[[], bool], what: str) -> None:
        """Stop the process, check the phase still holds, send sig, continue: sig lands inside the phase."""
        os.kill(self.proc.pid, signal.SIGSTOP)
        try:
            self.look()
            assert still(), f"the phase ({what}) ended before the signal could be sent"
            if sig == signal.SIGINT:
                os.killpg(self.proc.pid, sig)  # a terminal's Ctrl-C: the whole foreground group
            else:
                os.kill(self.proc.pid, sig)  # timeout(1), systemd, kubelet: the process
        finally:
            os.killpg(self.proc.pid, signal.SIGCONT)

    def finish(self, timeout: float = PHASE_TIMEOUT_S) -> tuple[int, str]:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"cniprof {' '.join(self.argv)} still running {timeout:.0f} s after the signal")
        return rc, self.err.read_text()

    def assert_cleaned_up(self, sig: int, namespaces_after: set[str]) -> None:
        rc, err = self.finish()
        name = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}[sig]
        assert rc == 128 + sig, f"rc {rc}\n{err}"
        lines = err.splitlines()
        if self.argv[0] == "run":  # a study prints its plan and progress on stderr while it works; then the line
            assert "Traceback" not in err and lines and lines[-1].startswith("cniprof: "), err
            lines = lines[-1:]
        assert lines == [f"cniprof: {name}; everything cniprof created was removed"], err
        alive = []
        for pid, created in self.processes.items():
            try:
                if psutil.Process(pid).create_time() == created:
                    alive.append(f"{pid} {psutil.Process(pid).cmdline()}")
            except psutil.NoSuchProcess:
                continue
        assert not alive, f"processes left: {alive}"
        assert not [i for i in self.links if _bpf_exists("link", i)], "BPF links left"
        assert not [i for i in self.progs if _bpf_exists("prog", i)], "BPF programs left"
        assert lab_namespaces() == namespaces_after
        assert saved.holder() is None, "the lab is still marked in use"


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    return tmp_path


def _has_links(w: Watched) -> Callable[[], bool]:
    return lambda: bool(_bpf_ids(w.proc.pid)[0])


def _generator_runs(w: Watched, name: str) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            kids = psutil.Process(w.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return False
        return any(_name(p) == name for p in kids)
    return ready


def _name(p: psutil.Process) -> str:
    try:
        return p.name()
    except psutil.NoSuchProcess:
        return ""


def _namespaces(at_least: int) -> Callable[[], bool]:
    return lambda: len(lab_namespaces()) >= at_least


# ------------------------------------------------------------------ lab up


@pytest.mark.lab_destructive
@pytest.mark.parametrize("sig", SIGNALS, ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("built", [1, 4], ids=["first namespace", "fourth namespace"])
def test_lab_up(no_lab: None, sig: int, built: int, tmp: Path) -> None:
    w = Watched.start("lab", "up", "--cni", "flannel", tmp=tmp)
    w.wait_for(f"{built} lab namespaces", _namespaces(built), every=0.005)
    w.signal_in(sig, _namespaces(built), "building")
    w.assert_cleaned_up(sig, set())
    assert saved.load() is None


# ------------------------------------------------------------------ trace


@pytest.mark.lab_destructive
@pytest.mark.parametrize("sig", SIGNALS, ids=["SIGINT", "SIGTERM"])
def test_trace_while_building_its_lab(no_lab: None, sig: int, tmp: Path) -> None:
    w = Watched.start("trace", "--no-ui", "--duration", "5", "--export", str(tmp / "run"), tmp=tmp)
    w.wait_for("a lab namespace", _namespaces(2), every=0.005)
    w.signal_in(sig, lambda: not _has_links(w)(), "building, before the probes")
    w.assert_cleaned_up(sig, set())
    assert not (tmp / "run").exists()


@pytest.mark.parametrize("sig", SIGNALS, ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("phase", ["probes attached", "generator running"])
def test_trace_on_a_reused_lab(lab: Topology, sig: int, phase: str, tmp: Path) -> None:
    before = lab_namespaces()
    w = Watched.start("trace", "--no-ui", "--cpu", "--duration", "20", "--export", str(tmp / "run"),
                      tmp=tmp)
    ready = _has_links(w) if phase == "probes attached" else _generator_runs(w, "iperf3")
    w.wait_for(phase, ready, every=0.005)
    w.signal_in(sig, ready, phase)
    w.assert_cleaned_up(sig, before)  # a reused lab is left up, as it was
    assert w.links, "no BPF link was seen: the moment was not reached"
    assert not (tmp / "run").exists()


@pytest.mark.parametrize("sig", SIGNALS, ids=["SIGINT", "SIGTERM"])
def test_trace_during_its_export(lab: Topology, sig: int, tmp: Path) -> None:
    """The export is staged beside its directory and moved in whole: interrupted, there is no directory at all
    (and no staging left), never half of one."""
    parent = tmp / "exports"
    parent.mkdir()
    w = Watched.start("trace", "--no-ui", "--cpu", "--traffic", "udp", "--count", "200", "--duration", "2",
                      "--export", str(parent / "run"), tmp=tmp)

    def staging() -> bool:
        return any(p.name.endswith(".partial") for p in parent.iterdir())

    w.wait_for("the export's staging directory", staging, every=0.001)
    w.signal_in(sig, staging, "exporting")
    w.assert_cleaned_up(sig, lab_namespaces())
    assert sorted(p.name for p in parent.iterdir()) == [], "a half export or its staging directory was left"


# ------------------------------------------------------------------ run (a study)


@pytest.mark.lab_destructive
@pytest.mark.parametrize("sig", SIGNALS, ids=["SIGINT", "SIGTERM"])
def test_run_while_building_its_lab(no_lab: None, sig: int, tmp: Path) -> None:
    (tmp / "s.yaml").write_text(SCENARIO)
    w = Watched.start("run", str(tmp / "s.yaml"), "--output", str(tmp / "study"), tmp=tmp)
    w.wait_for("a lab namespace", _namespaces(2), every=0.005)
    w.signal_in(sig, lambda: not _generator_runs(w, "iperf3")(), "building")
    w.assert_cleaned_up(sig, set())
    _whole_files(tmp / "study")


@pytest.mark.parametrize("sig", SIGNALS, ids=["SIGINT", "SIGTERM"])
def test_run_mid_run(lab: Topology, sig: int, tmp: Path) -> None:
    before = lab_namespaces()
    (tmp / "s.yaml").write_text(SCENARIO)
    w = Watched.start("run", str(tmp / "s.yaml"), "--output", str(tmp / "study"), tmp=tmp)
    ready = _generator_runs(w, "iperf3")
    w.wait_for("the generator", ready, every=0.005)
    w.wait_for("the probes", _has_links(w), every=0.005)
    w.signal_in(sig, ready, "mid-run")
    w.assert_cleaned_up(sig, before)
    meta = _whole_files(tmp / "study")
    assert json.loads(meta.read_text())["status"] == "interrupted"


def _whole_files(root: Path) -> Path:
    """Every file under root is whole (no temporary left, every JSON parses); returns metadata.json's path."""
    for p in root.rglob("*") if root.exists() else ():
        assert not (p.name.startswith(".") and p.name.endswith((".tmp", ".partial"))), f"half file {p}"
        if p.suffix == ".json":
            json.loads(p.read_text())
    return root / "metadata.json"


# ------------------------------------------------------------------ tune


def _offloads(topo: Topology) -> dict[str, str]:
    """tx-checksumming/gso/tso of every tunnel device: what offloads-off injects and offloads-on tunes."""
    out = {}
    for node in topo.nodes:
        for dev in node.devices:
            if dev.role in ("vxlan", "tunnel"):
                text = subprocess.run(["ip", "netns", "exec", node.netns, "ethtool", "-k", dev.name],
                                      capture_output=True, text=True, check=True).stdout
                for line in text.splitlines():
                    key, _, value = line.partition(":")
                    if key in ("tx-checksumming", "generic-segmentation-offload", "tcp-segmentation-offload"):
                        out[f"{node.netns}/{dev.name}/{key}"] = value.split()[0]
    return out


@pytest.fixture
def injected_lab(no_lab: None, tmp: Path) -> Iterator[Topology]:
    """A user's own lab with offloads-off injected (torn down by no_lab afterwards)."""
    up = subprocess.run([*CNIPROF, "lab", "up", "--cni", "flannel", "--inject", "offloads-off"],
                        capture_output=True, text=True, check=False)
    assert up.returncode == 0, up.stderr
    topo = saved.load()
    assert topo is not None
    yield topo


@pytest.mark.lab_destructive
@pytest.mark.parametrize("sig", SIGNALS, ids=["SIGINT", "SIGTERM"])
def test_tune_mid_run_never_leaves_the_tuning_applied(injected_lab: Topology, sig: int, tmp: Path) -> None:
    before, namespaces = _offloads(injected_lab), lab_namespaces()
    assert before and set(before.values()) == {"off"}, before
    w = Watched.start("tune", "--try", "offloads-on", "--pairs", "2", "--duration", "6",
                      "--output", str(tmp / "tune"), tmp=tmp)

    def tuned() -> bool:
        return _generator_runs(w, "iperf3")() and "on" in set(_offloads(injected_lab).values())

    w.wait_for("the tuned run (offloads on, generator running)", tuned, every=0.05)
    w.signal_in(sig, tuned, "the tuned run")
    w.assert_cleaned_up(sig, namespaces)  # the user's lab stays up ...
    assert _offloads(injected_lab) == before  # ... exactly as it was: the tuning reverted
    assert not (tmp / "tune").exists()


@pytest.mark.lab_destructive
@pytest.mark.parametrize("sig", SIGNALS, ids=["SIGINT", "SIGTERM"])
def test_tune_on_a_lab_it_built(no_lab: None, sig: int, tmp: Path) -> None:
    w = Watched.start("tune", "--try", "offloads-on", "--pairs", "1", "--duration", "6",
                      "--output", str(tmp / "tune"), tmp=tmp)
    w.wait_for("a generator", _generator_runs(w, "iperf3"), every=0.02)
    w.signal_in(sig, _generator_runs(w, "iperf3"), "a run")
    w.assert_cleaned_up(sig, set())

