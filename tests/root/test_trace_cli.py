# SPDX-License-Identifier: Apache-2.0
"""`cniprof trace` as a user runs it: a subprocess with real traffic, exports, bad input and Ctrl-C."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import netpair
import owned
import pandas as pd
import pytest

from cniprof.lab import cleanup
from cniprof.probes.hops_abi import ATTACH_POINT
from cniprof.traffic.udp_burst import UdpBurst

pytestmark = pytest.mark.root

CNIPROF = [sys.executable, "-m", "cniprof"]
HOP_PROGRAMS = tuple(ATTACH_POINT)


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*CNIPROF, *args], capture_output=True, text=True, timeout=timeout, check=False)


def test_iperf3_trace_exports_consistent_files(lab, tmp_path: Path) -> None:
    out = tmp_path / "run"
    dst = lab.pod("pod-c").netns
    before = netpair.snmp(dst)
    # the whole run traced (--overhead-budget 100), so --sample auto calibrates 1-in-N (duty cycling, the default,
    # tracks every packet of its windows instead: tests/root/test_overhead_budget.py)
    p = _run("trace", "--cni", "flannel", "--duration", "3", "--overhead-budget", "100", "--no-ui", "--export",
             str(out))
    after = netpair.snmp(dst)
    assert p.returncode == 0, p.stderr
    assert "vxlan encap" in p.stdout and "Σ hop means" in p.stdout
    hops = pd.read_csv(out / "hops.csv")
    for col in ("direction", "seq", "hop", "role", "node", "device", "packets", "p50_us", "p90_us", "p99_us",
                "mean_us", "share_pct"):
        assert col in hops.columns, col
    # the same table in both files: every value, column order and row order (CSV keeps no dtypes: compare values)
    pd.testing.assert_frame_equal(hops, pd.read_parquet(out / "hops.parquet"), check_dtype=False)
    fwd = hops[(hops["direction"] == "pod-a→pod-c") & hops["expected"] & hops["in_e2e"]]
    assert len(fwd) == 9 and (fwd["packets"] > 0).all()
    assert list(fwd["seq"]) == sorted(fwd["seq"])
    summary = json.loads((out / "summary.json").read_text())
    for key in ("cni", "mode", "kernel", "arch", "duration_s", "traffic", "end_to_end", "hop_mean_sum_us",
                "unattributed_pct", "probes", "lost_events"):
        assert key in summary, key
    traffic = summary["traffic"]
    assert traffic["tool"] == "iperf3" and traffic["retransmits"] is not None
    # iperf3's numbers against the kernel's: pod-c's IP layer received at least the bytes iperf3 counted
    generator = summary["generator"]
    assert generator["bytes"] > 0 and netpair.delta(after, before, "IpExtInOctets") >= generator["bytes"]
    assert traffic["throughput_bps"] == pytest.approx(8 * generator["bytes"] / generator["duration_s"], rel=1e-3)
    e2e = summary["end_to_end"]
    assert 0 < e2e["packets"] <= fwd["packets"].iloc[0]  # no packet ends that did not start
    # reconciliation: sum of per-hop means vs the measured end-to-end mean
    assert abs(summary["hop_mean_sum_us"] - e2e["mean_us"]) <= 0.02 * e2e["mean_us"]
    assert "tp_btf/net:netif_receive_skb" in summary["probes"]
    assert (out / "drops.csv").read_text().startswith("point,")
    # --sample auto (the default): N from the packets counted in the calibration window and the README's budget
    sampling = summary["sampling"]
    assert (sampling["mode"], sampling["budget_per_s"]) == ("auto", 8000)
    seconds, candidates = sampling["calibration_s"], sampling["candidates"]
    assert seconds >= 0.5 and candidates > 0
    # calibration_s is rounded to 1 ms: N from either end of that millisecond
    assert sampling["every"] in {max(1, math.ceil(candidates / (seconds + d) / 8000)) for d in (-5e-4, 5e-4)}
    assert f"sampling: 1 in {sampling['every']} packets (auto, chosen from the first {seconds} s)" in p.stdout

    # `report` on the export prints what the trace printed: the same end-to-end and sampling lines
    report = _run("report", str(out))
    assert report.returncode == 0, report.stderr
    for line in p.stdout.splitlines():
        if line.startswith(("end-to-end mean", "sampling:", "path check:")):
            assert line in report.stdout.splitlines(), line
    assert (out / "report" / "hops-flame.svg").is_file()


GENERATORS = ("iperf3", "ping", "sockperf", "wrk", "nginx", "udp_burst", "connect_rate")


def _generators(pid: int) -> list[str]:
    """Command lines of the generators among a process's descendants (not the short-lived `ip`/`sh` of the node
    state readers)."""
    import psutil

    found = []
    for child in owned.descendants(pid):
        try:
            cmdline = " ".join(psutil.Process(child).cmdline())
        except psutil.NoSuchProcess:
            continue
        if any(g in cmdline for g in GENERATORS):
            found.append(cmdline)
    return found


def _trace_attached(proc: subprocess.Popen) -> bool:
    return proc.poll() is not None or bool(owned.held_links(HOP_PROGRAMS, pids=[proc.pid]))


def test_traffic_none_traces_what_flows_between_the_pods(lab, tmp_path: Path) -> None:
    """`--traffic none`: cniprof starts no generator and traces what others send between the two pods during
    --duration; here exactly 23 datagrams the test sends itself once the probe is attached."""
    out = tmp_path / "run"
    a, c = lab.pod("pod-a"), lab.pod("pod-c")
    # --overhead-budget 100: the test's own count of packets is exact only when the whole run is traced
    proc = subprocess.Popen([*CNIPROF, "trace", "--traffic", "none", "--sample", "1", "--overhead-budget", "100",
                             "--duration", "6", "--no-ui", "--export", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        owned.wait_for(lambda: _trace_attached(proc), "the trace's hop links", timeout_s=60)
        assert proc.poll() is None, proc.communicate()
        assert not _generators(proc.pid), "--traffic none started a generator"
        with UdpBurst(a.netns, c.netns, c.ip, count=23) as burst:
            assert burst.wait().received == 23
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["traffic"]["tool"] in (None, "none")
    hops = pd.read_csv(out / "hops.csv")
    fwd = hops[(hops["direction"] == "pod-a→pod-c") & hops["expected"] & hops["in_e2e"]]
    assert len(fwd) == 9 and (fwd["packets"] == 23).all(), fwd[["hop", "packets"]]
    assert summary["end_to_end"]["packets"] == 23


def test_src_and_dst_choose_the_traced_pair(lab, tmp_path: Path) -> None:
    out = tmp_path / "run"
    p = _run("trace", "--src", "pod-b", "--dst", "pod-d", "--traffic", "udp", "--count", "23", "--sample", "1",
             "--no-ui", "--export", str(out))
    assert p.returncode == 0, p.stderr
    snap = json.loads((out / "snapshot.json").read_text())
    assert [(d["src_pod"], d["dst_pod"]) for d in snap["directions"]] == [("pod-b", "pod-d"), ("pod-d", "pod-b")]
    assert (snap["directions"][0]["src_ip"], snap["directions"][0]["dst_ip"]) == (lab.pod("pod-b").ip,
                                                                                  lab.pod("pod-d").ip)
    hops = pd.read_csv(out / "hops.csv")
    fwd = hops[(hops["direction"] == "pod-b→pod-d") & hops["expected"] & hops["in_e2e"]]
    assert len(fwd) == 9 and (fwd["packets"] == 23).all(), fwd[["hop", "packets"]]
    assert set(hops["direction"]) == {"pod-b→pod-d", "pod-d→pod-b"}
    assert "veth-pod-b" in " ".join(fwd["hop"]) and "veth-pod-d" in " ".join(fwd["hop"])


def test_attach_time_is_printed_exported_and_written_once_attached(lab, tmp_path: Path) -> None:
    """The attach time (seconds from the command's start to its probes attached, measured by the process itself)
    is printed by --no-ui, exported as summary.json's overhead.attach_s and written to --ready-file: one value,
    above 0 and within the command's own run time, and the ready file is there while the probes are attached.
    How fast it is, is benchmarks/overhead.py's business (a timed assertion here would fail on a busy machine)."""
    out, ready = tmp_path / "run", tmp_path / "ready"
    started = time.monotonic()
    # --overhead-budget 100: the hop links stay attached for the whole run (duty cycling detaches them at once)
    proc = subprocess.Popen([*CNIPROF, "trace", "--duration", "2", "--overhead-budget", "100", "--no-ui",
                             "--export", str(out), "--ready-file", str(ready)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        owned.wait_for(lambda: proc.poll() is not None or ready.is_file(), "the ready file", timeout_s=60)
        assert proc.poll() is None, proc.communicate()
        assert owned.held_links(HOP_PROGRAMS, pids=[proc.pid]), "the ready file was written before the attach"
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    took = time.monotonic() - started
    assert proc.returncode == 0, stderr
    written = ready.read_text()
    assert re.fullmatch(r"\d+\.\d{3}\n", written), written
    attach_s = json.loads((out / "summary.json").read_text())["overhead"]["attach_s"]
    assert attach_s == float(written) and 0 < attach_s < took, (attach_s, took)
    assert f"overhead: attached {attach_s:.2f} s after start" in stdout, stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--src", "pod-a", "--dst", "pod-b"], "pod-a and pod-b do not form a cross-node pair"),
    (["--src", "pod-zz"], "no such pod pair for cross-node; pods in the lab: pod-a, pod-b, pod-c, pod-d"),
])
def test_a_pair_the_lab_does_not_have_is_one_line(lab, args: list[str], message: str) -> None:
    p = _run("trace", *args, "--no-ui")
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and message in p.stderr, p.stderr


def test_unknown_cni_is_one_line_listing_supported() -> None:
    p = _run("trace", "--cni", "weave")
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and "flannel" in p.stderr and "Traceback" not in p.stderr


def test_not_root_is_one_line() -> None:
    p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *CNIPROF, "trace",
                        "--no-ui"], capture_output=True, text=True, timeout=60, env={**os.environ, "HOME": "/tmp"}, check=False)
    assert p.returncode == 3, p.stderr  # an environment problem
    assert p.stderr.count("\n") == 1 and "root" in p.stderr and "Traceback" not in p.stderr


def _lab_being_built() -> bool:
    return bool(cleanup.list_lab_namespaces())


def _tracing(proc: subprocess.Popen) -> bool:
    """The run's hop links are attached and its generator runs."""
    names = {p.name() for p in map(_process, owned.descendants(proc.pid)) if p is not None}
    return "iperf3" in names and bool(owned.held_links(HOP_PROGRAMS, pids=[proc.pid]))


def _process(pid: int):
    import psutil

    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


@pytest.mark.lab_destructive
@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.parametrize("when", ["building", "tracing"])  # the fork-hook drop is fixed (interrupts.py)
def test_signal_leaves_nothing_behind(no_lab, when: str, signum: int, status: int) -> None:
    """Ctrl-C or SIGTERM once the lab's first namespace exists (the build) or once the hop links are attached and
    iperf3 runs: exit 130/143 with one line, and no namespace, BPF link or process of the run is left."""
    with netpair.sigint_not_ignored():
        proc = subprocess.Popen([*CNIPROF, "trace", "--duration", "30", "--no-ui"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    ready = _lab_being_built if when == "building" else lambda: _tracing(proc)
    err, children, programs = owned.signal_when(proc, ready, f"the trace {when}", signum, timeout_s=60)
    assert proc.returncode == status, err
    what = "interrupted" if signum == signal.SIGINT else "terminated"
    assert err == f"cniprof: {what}; everything cniprof created was removed\n"
    assert cleanup.list_lab_namespaces() == []
    assert not owned.settle(lambda: owned.alive(children)), "processes of the run left"
    assert not owned.settle(owned.stray_processes), "processes of this session left"
    assert not owned.settle(lambda: owned.loaded_programs(programs)), "the run's BPF programs are still loaded"
