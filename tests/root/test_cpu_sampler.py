# SPDX-License-Identifier: Apache-2.0
"""The CPU sampler on the real kernel: iperf3 between two pods of the lab during a ~2 s capture, what the
samples contain, the softirq time, and that nothing (BPF programs, links, perf event fds) is left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from cniprof.analysis.cpu import analyze_cpu, component_table, softirq_table
from cniprof.bpf.build import object_path
from cniprof.errors import EnvironmentProblem
from cniprof.probes.cpu import CpuSampler
from cniprof.probes.cpu_abi import PROGRAMS
from cniprof.report.cpu_profile import SPEEDSCOPE_SCHEMA
from cniprof.sysinfo import online_cpus
from cniprof.traffic.iperf3 import Iperf3

pytestmark = pytest.mark.root

CNIPROF = [sys.executable, "-m", "cniprof"]


def _bpftool(*args: str) -> list[dict]:
    out = subprocess.run(["bpftool", "-j", *args], capture_output=True, text=True, check=True).stdout
    return json.loads(out or "[]")


def _our_prog_ids() -> set[int]:
    """Loaded programs named like ours (other sessions may run their own sampler; compare ids, not counts)."""
    return {p["id"] for p in _bpftool("prog", "show") if p.get("name") in PROGRAMS}


def _released(prog_ids: set[int], timeout_s: float = 5.0) -> bool:
    """The kernel frees a tracing program shortly after its last link (after an RCU grace period): poll."""
    deadline = time.monotonic() + timeout_s
    while prog_ids & _our_prog_ids():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _links_of(prog_ids: set[int]) -> list[dict]:
    return [link for link in _bpftool("link", "show") if link.get("prog_id") in prog_ids]


def _perf_fds() -> int:
    """perf_event fds this process holds (anon inodes named [perf_event])."""
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[perf_event]":
                n += 1
        except OSError:
            pass
    return n


@pytest.fixture(scope="module")
def capture(lab) -> Iterator[dict]:
    """One ~2 s capture with iperf3 pod-a -> pod-c (cross-node: veth, bridge, vxlan, tcp on the path)."""
    a = next(p for p in lab.pods if p.name == "pod-a")
    c = next(p for p in lab.pods if p.name == "pod-c")
    before = _our_prog_ids()
    fds = _perf_fds()
    sampler = CpuSampler(object_path("cpu"))
    try:
        sampler.start()
        mine = _our_prog_ids() - before
        links = _links_of(mine)
        attached_fds = _perf_fds()
        gen = Iperf3(a.netns, c.netns, c.ip, 2.0)
        gen.start()
        try:
            gen.wait(timeout=30)
        finally:
            gen.stop()
        snapshot = sampler.snapshot()
    finally:
        sampler.close()
    yield {"snapshot": snapshot, "mine": mine, "links": links, "fds": fds, "attached_fds": attached_fds}


def test_programs_and_links_while_attached(capture) -> None:
    assert len(capture["mine"]) == 3
    kinds = sorted(link.get("type") for link in capture["links"])
    # one perf_event link per online CPU, two tracing links for the softirq tracepoints
    assert kinds.count("perf_event") == len(online_cpus())
    assert len(kinds) == len(online_cpus()) + 2
    assert capture["attached_fds"] == capture["fds"] + len(online_cpus())  # one perf event per CPU, owned by links


def test_nothing_left_behind(capture) -> None:
    assert _released(capture["mine"])
    assert not _links_of(capture["mine"])
    assert _perf_fds() == capture["fds"]


def test_samples_have_datapath_stacks(capture) -> None:
    snap = capture["snapshot"]
    total = sum(s["count"] for s in snap["samples"])
    assert total > 0 and snap["counters"]["samples"] >= total
    assert {s["cpu"] for s in snap["samples"]} == set(online_cpus())
    kframes = {f for s in snap["samples"] if s["kstack"] is not None for f in snap["stacks"][s["kstack"]]}
    for prefix in ("veth_", "vxlan_", "tcp_", "br_"):
        assert any(f.startswith(prefix) for f in kframes), prefix
    # a sample per 1/999 s per CPU at most (an idle virtual CPU may take none: see analysis.cpu.softirq_table)
    for cpu in online_cpus():
        ns = sum(s["period_ns"] for s in snap["samples"] if s["cpu"] == cpu)
        assert 0 < ns / 1e9 < snap["elapsed_s"] * 1.1
    assert snap["counters"]["keys_full"] == 0
    assert snap["counters"]["kstack_lost"] < 0.1 * total
    json.dumps(snap, allow_nan=False)


def test_component_shares_sum_to_100(capture) -> None:
    comps = component_table(capture["snapshot"])
    assert abs(comps["share_pct"].sum() - 100.0) < 1e-6
    datapath = set(comps[comps["datapath"]]["component"])
    assert {"tcp", "veth", "vxlan/tunnel", "bridge"} <= datapath
    assert "idle" not in set(comps["component"])


def test_softirq_net_rx_time(capture) -> None:
    snap = capture["snapshot"]
    assert sum(e["time_ns"] for e in snap["softirq"] if e["name"] == "NET_RX") > 0
    table = softirq_table(snap)
    assert list(table["cpu"]) == online_cpus()
    assert (table["net_rx_pct"] <= 100.0).all() and table["net_rx_ms"].sum() > 0
    summary = analyze_cpu(snap).summary
    assert set(summary["softirq"]) == {str(c) for c in online_cpus()}
    json.dumps(summary, allow_nan=False)


def test_failed_start_releases_everything(lab) -> None:
    """A perf event that cannot be opened (a CPU that does not exist) fails start(); close() releases what
    was attached before the failure, as the trace's ExitStack does."""
    before, fds = _our_prog_ids(), _perf_fds()
    sampler = CpuSampler(object_path("cpu"), cpus=[online_cpus()[0], 4095])
    try:
        with pytest.raises(EnvironmentProblem, match="CPU 4095"):
            sampler.start()
        mine = _our_prog_ids() - before
        assert len(mine) == 3 and _perf_fds() == fds + 1  # softirq links and CPU 0's event were attached
    finally:
        sampler.close()
    assert _released(mine)
    assert _perf_fds() == fds


def test_trace_cli_cpu_exports(lab, tmp_path: Path) -> None:
    out = tmp_path / "run"
    p = subprocess.run([*CNIPROF, "trace", "--duration", "2", "--cpu", "--no-ui", "--export", str(out)],
                       capture_output=True, text=True, timeout=180, check=False)
    assert p.returncode == 0, p.stderr
    assert "top components" in p.stdout and "softirq per CPU" in p.stdout
    hops = pd.read_csv(out / "hops.csv")
    for col in ("cpu_us_per_pkt", "cpu_us_per_gb", "cpu_component"):
        assert col in hops.columns
    veth = hops[hops["role"].astype(str).str.contains("veth xmit") & (hops["packets"] > 0)]
    assert len(veth) and (veth["cpu_us_per_pkt"] > 0).all()
    assert veth["cpu_component"].str.contains("veth").all()
    summary = json.loads((out / "summary.json").read_text())
    cpu = summary["cpu"]
    assert cpu["samples"] > 0 and cpu["top_component"] and 0 < cpu["datapath_pct"] <= 100
    assert abs(sum(c["share_pct"] for c in cpu["components"].values()) - 100) < 0.1
    assert set(cpu["softirq"]) == {str(c) for c in online_cpus()} and isinstance(cpu["saturated_cpus"], list)
    for name in ("cpu.svg", "hops-flame.svg"):
        ET.parse(out / name)
    doc = json.loads((out / "cpu.speedscope.json").read_text())
    assert doc["$schema"] == SPEEDSCOPE_SCHEMA and doc["profiles"][0]["type"] == "sampled"
    folded = (out / "cpu.folded").read_text().splitlines()
    assert folded and all(line.rsplit(" ", 1)[1].isdigit() for line in folded)
    assert any(line.startswith("iperf3;") for line in folded)


def test_bad_cpu_freq_is_one_line() -> None:
    p = subprocess.run([*CNIPROF, "trace", "--cpu", "--cpu-freq", "0", "--no-ui"], capture_output=True, text=True,
                       timeout=60, check=False)
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and "--cpu-freq" in p.stderr and "Traceback" not in p.stderr
