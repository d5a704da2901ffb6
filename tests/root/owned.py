# SPDX-License-Identifier: Apache-2.0
"""What this test session owns on a shared machine, and how to wait for it without fixed sleeps.

Other sessions (other engineers, CI jobs) run the same BPF programs, generators and labs at the same time, so a
test never judges the machine by name (`pgrep iperf3`, every link of a program called `on_dev_queue`): it looks
at its own processes and what they hold.

- This session's processes: pytest itself and every process whose environment carries this session's
  CNIPROF_LAB_ID (tests/conftest.py makes it unique per session; every child inherits it, `ip netns exec` and
  cniprof's generators included).
- This session's BPF links and programs: those held open by an fd of one of those processes
  (/proc/PID/fdinfo/FD shows `link_id`/`prog_id`). A BPF link lives exactly as long as an fd (or a pin, which
  cniprof never makes) holds it, so a link a run leaves behind is held by one of its processes.
- Namespaces: `netns_name(tag)` is inside this session's prefix (`cniprof_<id>-...`), so the leak checks of
  conftest.py cover them, and a fixed port inside one is private to this session.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import psutil

from cniprof.cni.topology import NETNS_PREFIX

LAB_ID = os.environ["CNIPROF_LAB_ID"]  # set by tests/conftest.py before cniprof was imported
T = TypeVar("T")


def netns_name(tag: str) -> str:
    """A namespace name of this session's own (`cniprof_<id>-<tag>`), never one of the lab's (`...-node...`)."""
    assert not tag.startswith("node"), "node* names belong to the lab and its cleanup"
    return f"{NETNS_PREFIX}{tag}"


def _environ_lab_id(pid: int) -> str | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None  # gone, or not readable
    return next((e.split(b"=", 1)[1].decode(errors="replace") for e in env if e.startswith(b"CNIPROF_LAB_ID=")),
                None)


def session_pids() -> set[int]:
    """pytest and every live process started with this session's lab id in its environment. (pytest's own
    /proc/self/environ predates conftest.py's setting, hence the explicit pid.)"""
    pids = {os.getpid()}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _environ_lab_id(int(entry)) == LAB_ID:
            pids.add(int(entry))
    return pids


def stray_processes() -> set[int]:
    """Live processes of this session other than pytest, its ancestors and its threads' helpers: a run that
    ended must leave none (generators, servers, `ip netns exec` wrappers)."""
    me = psutil.Process()
    keep = {me.pid, *(p.pid for p in me.parents())}
    left = set()
    for pid in session_pids() - keep:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                left.add(pid)
        except psutil.NoSuchProcess:
            continue
    return left


def _fdinfo(pids: Iterable[int]) -> list[dict[str, str]]:
    out = []
    for pid in pids:
        for info in Path(f"/proc/{pid}/fdinfo").glob("*"):
            try:
                text = info.read_text()
            except OSError:
                continue
            out.append({k.strip(): v.strip() for k, v in (ln.split(":", 1) for ln in text.splitlines() if ":" in ln)})
    return out


@functools.lru_cache(maxsize=4096)
def _prog_name(prog_id: int) -> str:
    out = subprocess.run(["bpftool", "-j", "prog", "show", "id", str(prog_id)], capture_output=True, text=True,
                         check=False, timeout=30).stdout
    return json.loads(out or "{}").get("name", "") if out.strip() else ""


def held_links(names: Iterable[str] | None = None, pids: Iterable[int] | None = None) -> set[int]:
    """Ids of BPF links held open by this session's processes (or by `pids`), optionally only those whose program
    is named in `names` (the kernel keeps 15 characters of a program's name)."""
    wanted = None if names is None else {n[:15] for n in names}
    links = {}
    for fields in _fdinfo(session_pids() if pids is None else pids):
        if "link_id" in fields:
            links[int(fields["link_id"])] = int(fields.get("prog_id", "-1"))
    if wanted is None:
        return set(links)
    return {link for link, prog in links.items() if _prog_name(prog) in wanted}


def held_programs(pids: Iterable[int] | None = None) -> set[int]:
    """Ids of BPF programs this session's processes (or `pids`) hold through a program fd or a link fd."""
    return {int(f["prog_id"]) for f in _fdinfo(session_pids() if pids is None else pids) if "prog_id" in f}


def loaded_programs(ids: Iterable[int]) -> set[int]:
    """Those of the given program ids the kernel still has (asked by id: other sessions' programs are not
    looked at)."""
    return {i for i in ids if subprocess.run(["bpftool", "prog", "show", "id", str(i)], capture_output=True,
                                             check=False, timeout=30).returncode == 0}


def wait_for(predicate: Callable[[], T], what: str, timeout_s: float = 30.0, interval_s: float = 0.05) -> T:
    """Poll until `predicate()` is truthy; its value, or an AssertionError naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def settle(predicate: Callable[[], T], timeout_s: float = 5.0) -> T:
    """Poll until `predicate()` is falsy (the kernel frees links and programs after an RCU grace period, a
    killed child takes a moment to be reaped); its last value, falsy unless `timeout_s` ran out."""
    deadline = time.monotonic() + timeout_s
    while (value := predicate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def descendants(pid: int) -> set[int]:
    """Live descendants of a process (generators, `ip netns exec` wrappers)."""
    try:
        return {c.pid for c in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def alive(pids: Iterable[int]) -> set[int]:
    left = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                left.add(pid)
        except psutil.NoSuchProcess:
            continue
    return left


def signal_when(proc: subprocess.Popen[str], ready: Callable[[], bool], what: str, signum: int,
                timeout_s: float = 120.0) -> tuple[str, set[int], set[int]]:
    """Once ready() holds (polled) while proc still runs, send it signum once and wait for it to end; returns its
    stderr and the descendants and BPF programs it had just before the signal. proc is killed if anything fails."""
    try:
        wait_for(lambda: proc.poll() is not None or ready(), what, timeout_s=timeout_s)
        assert proc.poll() is None, proc.communicate()
        children = descendants(proc.pid)
        programs = held_programs(pids=[proc.pid])
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return err, children, programs
