# SPDX-License-Identifier: Apache-2.0
"""Injected problems and `cniprof tune` on a real lab: what an injection changes is read back from the kernel,
`lab down` leaves nothing, refusals are one line, and a real tune run measures, writes its files and leaves the
lab exactly in its injected state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from cniprof.cni.topology import LAB_NETNS_PREFIX
from cniprof.lab import cleanup, saved, tunings

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.root, pytest.mark.lab_destructive]
NODES = (f"{LAB_NETNS_PREFIX}1", f"{LAB_NETNS_PREFIX}2")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "cniprof", *args], check=False, cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def features(netns: str, dev: str) -> dict[str, bool]:
    out = subprocess.run(["ip", "netns", "exec", netns, "ethtool", "-k", dev], check=True, capture_output=True,
                         text=True).stdout
    return {k: on for k, (on, _fixed) in tunings.parse_features(out).items()}


def mtu(netns: str, dev: str) -> int:
    return int(tunings.link_info(tunings.Dev(netns, dev, "?"))["mtu"])


def lab_state() -> dict[str, object]:
    """Every setting an injection or a tuning touches, on every device of the lab."""
    topo = saved.load()
    assert topo is not None
    return {(d.netns, d.name): (mtu(d.netns, d.name), features(d.netns, d.name)) for d in topo.devices()}


def one_line_error(result: subprocess.CompletedProcess[str], text: str, status: int = 2) -> None:
    """Exit `status` (2: usage, 3: environment, e.g. no lab) with exactly one line naming `text`."""
    assert result.returncode == status, (result.returncode, result.stderr)
    assert result.stderr.count("\n") == 1 and text in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_injections_are_in_the_kernel_and_the_state_and_down_removes_them(no_lab: None) -> None:
    up = cli("lab", "up", "--cni", "flannel", "--inject", "offloads-off", "--inject", "mtu-mismatch")
    assert up.returncode == 0, up.stderr
    more = cli("lab", "inject", "softirq-one-cpu", "offloads-off")
    assert more.returncode == 0, more.stderr
    assert "offloads-off: already injected" in more.stdout
    for node in NODES:
        vx = features(node, "flannel.1")
        assert not vx["generic-segmentation-offload"] and not vx["tcp-segmentation-offload"]
        assert not vx["tx-checksumming"]
        assert features(node, "veth-pod-a" if node.endswith("1") else "veth-pod-c")["tx-checksumming"]
        assert (mtu(node, "eth0"), mtu(node, "flannel.1")) == (1450, 1450)  # underlay lowered, overlay kept
    assert mtu(f"{NODES[0]}-pod-a", "eth0") == 1450
    status = cli("lab", "status", "--json")
    assert json.loads(status.stdout)["injections"] == ["offloads-off", "mtu-mismatch", "softirq-one-cpu"]
    assert "injected: offloads-off, mtu-mismatch, softirq-one-cpu" in cli("lab", "status").stdout
    down = cli("lab", "down")
    assert down.returncode == 0, down.stderr
    assert cleanup.list_lab_namespaces() == [] and not saved.STATE_FILE.exists()
    # a new lab starts clean: nothing of the injections outlived the namespaces
    assert cli("lab", "up", "--cni", "flannel").returncode == 0
    assert saved.load().injections == ()
    assert mtu(NODES[0], "eth0") == 1500 and features(NODES[0], "flannel.1")["tcp-segmentation-offload"]


def test_refusals_are_one_line_and_build_nothing(no_lab: None, tmp_path: Path) -> None:
    one_line_error(cli("lab", "up", "--cni", "flannel:host-gw", "--inject", "offloads-off"),
                   "cannot inject offloads-off: the flannel/host-gw lab has no tunnel device")
    assert cleanup.list_lab_namespaces() == [] and not saved.STATE_FILE.exists()
    one_line_error(cli("lab", "up", "--inject", "services=x"), "services=N needs N in 0..")
    one_line_error(cli("lab", "up", "--inject", "bogus"), "unknown injection 'bogus'")
    assert cleanup.list_lab_namespaces() == []
    one_line_error(cli("lab", "inject", "offloads-off"), "no lab is up", status=3)
    one_line_error(cli("tune", "--try", "kube-proxy-nftables"), "needs kube-proxy services in the lab")
    one_line_error(cli("tune", "--auto"), "--auto tries the tunings advised for a run: give it --from RUN_DIR")
    one_line_error(cli("tune", "--auto", "--from", str(tmp_path)), "has no findings.json")
    one_line_error(cli("tune", "--try", "offloads-on", "--pairs", "0"), "argument --pairs: must be 1..100, not 0")
    # unpin-generators on a lab nobody pinned: nothing to measure (the lab tune built is removed again)
    one_line_error(cli("tune", "--try", "unpin-generators"), "unpin-generators changes nothing")
    assert cleanup.list_lab_namespaces() == []


@pytest.mark.parametrize(("injection", "tuning"), [("offloads-off", "offloads-on"), ("mtu-mismatch", "mtu-match")])
def test_tune_measures_for_real_and_reverts_to_the_injected_state(no_lab: None, tmp_path: Path, injection: str,
                                                                  tuning: str) -> None:
    assert cli("lab", "up", "--inject", injection).returncode == 0
    before = lab_state()
    result = cli("tune", "--try", tuning, "--pairs", "1", "--duration", "1", "--output", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert lab_state() == before  # every tuned run was reverted: the lab is back in its injected state
    assert saved.load().injections == (injection,)
    runs = pd.read_csv(tmp_path / "tune.csv")
    assert list(runs["arm"]) == ["baseline", "tuned"] and set(runs["tuning"]) == {tuning}
    assert (runs["throughput_bps"] > 0).all()  # iperf3's printed numbers, one per run
    written = json.loads((tmp_path / "tune.json").read_text())
    assert written["injections"] == [injection] and written["effects"][0]["pairs"] == 1
    assert written["tunings"][tuning]["changes"]  # what the tuned run changed, e.g. "flannel.1: gso on"
    assert (tmp_path / "tune.png").stat().st_size > 0 and (tmp_path / "tune.svg").is_file()
    report = cli("report", str(tmp_path))
    assert report.returncode == 0, report.stderr
    assert tuning in report.stdout and (tmp_path / "report" / "tune.png").is_file()


def nat_jumps(netns: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "exec", netns, "iptables", "-t", "nat", "-S"], check=True,
                         capture_output=True, text=True).stdout
    return sorted(line for line in out.splitlines() if "-j KUBE-SERVICES" in line)


def nft_tables(netns: str) -> str:
    return subprocess.run(["ip", "netns", "exec", netns, "nft", "list", "tables"], check=True, capture_output=True,
                          text=True).stdout


def routes(netns: str) -> str:
    return subprocess.run(["ip", "netns", "exec", netns, "ip", "route"], check=True, capture_output=True,
                          text=True).stdout


def test_injected_services_are_traced_and_switched_to_nftables_and_back(no_lab: None, tmp_path: Path) -> None:
    up = cli("lab", "up", "--inject", "services=300")
    assert up.returncode == 0, up.stderr
    jumps = {n: nat_jumps(n) for n in NODES}
    assert all(len(j) == 2 for j in jumps.values())  # PREROUTING and OUTPUT -> KUBE-SERVICES
    # a pod-to-service trace sends through the injected ClusterIP and leaves the rules in place
    trace = cli("trace", "--path", "pod-to-service", "--traffic", "udp", "--count", "40", "--duration", "2",
                "--no-ui", "--export", str(tmp_path / "trace"))
    assert trace.returncode == 0, trace.stderr
    service = json.loads((tmp_path / "trace" / "summary.json").read_text())["service"]
    assert service["injected"] and service["dummy_services"] == 300 and service["cluster_ip"].startswith("10.96.")
    told = [line for line in trace.stdout.splitlines() if line.startswith(("path check", "accounting", "+ ", "probe"))]
    assert "40/40 packets end to end" in trace.stdout, "\n".join(told)
    assert {n: nat_jumps(n) for n in NODES} == jumps
    one_line_error(cli("trace", "--path", "pod-to-service", "--services", "5", "--no-ui"), "drop --services")
    tune = cli("tune", "--try", "kube-proxy-nftables", "--pairs", "1", "--duration", "1", "--output",
               str(tmp_path / "tune"))
    assert tune.returncode == 0, tune.stderr
    runs = pd.read_csv(tmp_path / "tune" / "tune.csv")
    assert list(runs["arm"]) == ["baseline", "tuned"] and (runs["connects_per_s"] > 0).all()
    saved = json.loads((tmp_path / "tune" / "tune.json").read_text())
    assert saved["tunings"]["kube-proxy-nftables"]["dst_ip"] == service["cluster_ip"]
    # the staged nftables table is gone and iptables mode is back exactly
    assert {n: nat_jumps(n) for n in NODES} == jumps
    assert all("kube-proxy" not in nft_tables(n) for n in NODES)


def test_host_gw_routes_are_switched_for_the_tuned_runs_only(no_lab: None, tmp_path: Path) -> None:
    assert cli("lab", "up", "--cni", "flannel").returncode == 0
    before = {n: routes(n) for n in NODES}
    assert all("dev flannel.1" in r for r in before.values())
    tune = cli("tune", "--try", "host-gw", "--pairs", "1", "--duration", "1", "--output", str(tmp_path))
    assert tune.returncode == 0, tune.stderr
    changes = json.loads((tmp_path / "tune.json").read_text())["tunings"]["host-gw"]["changes"]
    assert len(changes) == 2 and all("(host-gw)" in c for c in changes)
    assert {n: routes(n) for n in NODES} == before


def test_auto_tries_what_advise_found_on_an_injected_lab(no_lab: None, tmp_path: Path) -> None:
    """The whole loop on a real problem: inject, trace, advise (top finding), tune --auto from those findings."""
    assert cli("lab", "up", "--inject", "offloads-off").returncode == 0
    run = tmp_path / "run"
    trace = cli("trace", "--traffic", "iperf3", "--duration", "2", "--no-ui", "--export", str(run))
    assert trace.returncode == 0, trace.stderr
    assert cli("advise", str(run)).returncode == 0
    top = json.loads((run / "findings.json").read_text())["findings"][0]
    assert (top["kind"], top["severity"]) == ("offloads_off", "fault")
    tune = cli("tune", "--auto", "--from", str(run), "--pairs", "1", "--duration", "1")
    assert tune.returncode == 0, tune.stderr
    saved = json.loads((run / "tune.json").read_text())  # written into the run directory it came from
    assert "offloads-on" in saved["tunings"] and saved["injections"] == ["offloads-off"]
    advised = {a["tune"] for f in json.loads((run / "findings.json").read_text())["findings"]
               for a in f["advice"] if a.get("tune")}
    assert advised == set(saved["tunings"]) | {s["tuning"] for s in saved["skipped"]}  # each run, or said why not
    report = cli("report", str(run))
    assert report.returncode == 0, report.stderr
    assert (run / "report" / "tune.png").is_file()
