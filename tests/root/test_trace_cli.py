# SPDX-License-Identifier: Apache-2.0
"""`cniprof trace` as a user runs it: a subprocess with real traffic, exports, bad input and Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import netpair
import pandas as pd
import pytest

from cniprof.lab import cleanup
from cniprof.probes.hops_abi import ATTACH_POINT

pytestmark = pytest.mark.root

CNIPROF = [sys.executable, "-m", "cniprof"]


def _links() -> set[str]:
    """Links of cniprof's hop programs only: other work on the machine may attach and detach meanwhile."""
    def show(what: str) -> list[dict]:
        out = subprocess.run(["bpftool", "-j", what, "show"], capture_output=True, text=True, check=True).stdout
        return json.loads(out or "[]")

    names = {name[:15] for name in ATTACH_POINT}  # the kernel keeps 15 characters of a program's name
    ours = {p["id"] for p in show("prog") if p.get("name", "") in names}
    return {str(link["id"]) for link in show("link") if link.get("prog_id") in ours}


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*CNIPROF, *args], capture_output=True, text=True, timeout=timeout, check=False)


def test_iperf3_trace_exports_consistent_files(lab, tmp_path: Path) -> None:
    out = tmp_path / "run"
    p = _run("trace", "--cni", "flannel", "--duration", "3", "--no-ui", "--export", str(out))
    assert p.returncode == 0, p.stderr
    assert "vxlan encap" in p.stdout and "Σ hop means" in p.stdout
    hops = pd.read_csv(out / "hops.csv")
    for col in ("direction", "seq", "hop", "role", "node", "device", "packets", "p50_us", "p90_us", "p99_us",
                "mean_us", "share_pct"):
        assert col in hops.columns, col
    assert hops.equals(pd.read_parquet(out / "hops.parquet")) or len(hops) == len(pd.read_parquet(out / "hops.parquet"))
    fwd = hops[(hops["direction"] == "pod-a→pod-c") & hops["expected"] & hops["in_e2e"]]
    assert len(fwd) == 9 and (fwd["packets"] > 0).all()
    assert list(fwd["seq"]) == sorted(fwd["seq"])
    summary = json.loads((out / "summary.json").read_text())
    for key in ("cni", "mode", "kernel", "arch", "duration_s", "traffic", "end_to_end", "hop_mean_sum_us",
                "unattributed_pct", "probes", "lost_events"):
        assert key in summary, key
    assert summary["traffic"]["tool"] == "iperf3" and summary["traffic"]["throughput_bps"] > 1e8
    assert summary["traffic"]["retransmits"] is not None
    e2e = summary["end_to_end"]
    assert e2e["packets"] > 1000
    # reconciliation: sum of per-hop means vs the measured end-to-end mean
    assert abs(summary["hop_mean_sum_us"] - e2e["mean_us"]) <= 0.02 * e2e["mean_us"]
    assert "tp_btf/net:netif_receive_skb" in summary["probes"]
    assert (out / "drops.csv").read_text().startswith("point,")


def test_unknown_cni_is_one_line_listing_supported() -> None:
    p = _run("trace", "--cni", "weave")
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and "flannel" in p.stderr and "Traceback" not in p.stderr


def test_not_root_is_one_line() -> None:
    p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *CNIPROF, "trace",
                        "--no-ui"], capture_output=True, text=True, timeout=60, env={**os.environ, "HOME": "/tmp"}, check=False)
    assert p.returncode != 0
    assert p.stderr.count("\n") == 1 and "root" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.lab_destructive
@pytest.mark.parametrize("after_s", [0.3, 2.5])
def test_ctrl_c_leaves_nothing_behind(no_lab, after_s: float) -> None:
    """SIGINT while the lab is being built or while tracing: no namespace, no BPF link, no generator left."""
    links_before = _links()
    with netpair.sigint_not_ignored():
        proc = subprocess.Popen([*CNIPROF, "trace", "--duration", "20", "--no-ui"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    time.sleep(after_s)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    # -2: the signal came before Python installed its handler (nothing was created yet)
    assert proc.returncode in (130, -2), err
    assert "Traceback" not in err
    assert cleanup.list_lab_namespaces() == []
    assert _links() <= links_before
    ps = subprocess.run(["pgrep", "-f", "iperf3"], capture_output=True, text=True, check=False)
    assert ps.stdout.strip() == ""
