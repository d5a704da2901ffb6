# SPDX-License-Identifier: Apache-2.0
"""`cniprof doctor` on the real kernel: the probes really load and attach, and leave nothing behind.

The reference machine (and CI, which is like it) allows tp_btf, raw_tp, tracepoint, perf_event, netfilter links
and ring buffers, and refuses fentry (EPERM) and kprobes (CONFIG_KPROBES off). The fentry/kprobe tests accept
either answer as long as it is a bool with a reason, so they stay true on kernels that do allow them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cniprof.bpf import features
from cniprof.bpf.build import object_dir
from cniprof.bpf.features import NAMES, Features

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not (object_dir() / "features.bpf.o").is_file(), reason="run python -m cniprof.bpf.build"),
    pytest.mark.skipif(shutil.which("bpftool") is None, reason="bpftool not installed"),
]

MUST_WORK_HERE = ("btf", "tp_btf", "raw_tp", "tracepoint", "perf_event", "netfilter_link", "ringbuf")
OUR_PROGRAMS = ("cpd_", "cpdoctor")  # program name prefixes in bpf/features.bpf.c and the netfilter probe


def bpftool(*args: str) -> list[dict]:
    out = subprocess.run(["bpftool", "-j", *args], check=True, capture_output=True, text=True, timeout=30).stdout
    return json.loads(out or "[]")


def leftovers() -> dict[str, object]:
    """Everything a calibration could leave: links, our programs, probe namespaces, tracefs mounts."""
    netns_dir = Path("/run/netns")
    # only links of the doctor's own programs: other work on the machine may attach and detach meanwhile
    ours = {p["id"] for p in bpftool("prog", "show") if p.get("name", "").startswith(OUR_PROGRAMS)}
    return {
        "links": sorted(link["id"] for link in bpftool("link", "show") if link.get("prog_id") in ours),
        "our_programs": sorted(p.get("name", "") for p in bpftool("prog", "show")
                               if p.get("name", "").startswith(OUR_PROGRAMS)),
        "probe_netns": sorted(n for n in os.listdir(netns_dir) if n.startswith("cpdoctor-"))
        if netns_dir.is_dir() else [],
        "tracefs_mounts": sum(" - tracefs " in line for line in Path("/proc/self/mountinfo").read_text().splitlines()),
    }


def settled_leftovers(timeout_s: float = 5.0) -> dict[str, object]:
    """leftovers() once our programs are gone: the kernel frees a closed netfilter link's program (and the
    deleted namespace) asynchronously, after an RCU grace period, so wait briefly rather than race it."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = leftovers()
        if not found["our_programs"] or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


@pytest.fixture(scope="module")
def calibration() -> tuple[Features, dict[str, object], dict[str, object]]:
    before = leftovers()
    result = features.calibrate()
    after = settled_leftovers()
    return result, before, after


@pytest.mark.parametrize("name", MUST_WORK_HERE)
def test_feature_available_on_this_machine(calibration: tuple, name: str) -> None:
    result, _, _ = calibration
    probe = result[name]
    assert probe.available is True, f"{name}: {probe.detail}"
    assert probe.detail and probe.used_for


@pytest.mark.parametrize("name", ("tp_btf", "raw_tp", "tracepoint"))
def test_program_probes_really_attach(calibration: tuple, name: str) -> None:
    assert calibration[0][name].detail.startswith("loaded and attached to net:netif_rx")


def test_perf_event_really_samples(calibration: tuple) -> None:
    detail = calibration[0].perf_event.detail
    assert "cpu-clock on CPU 0" in detail
    samples = int(detail.split(": ")[1].split()[0])
    assert samples > 0, detail


def test_netfilter_link_really_links(calibration: tuple) -> None:
    assert "linked at IPv4 LOCAL_OUT" in calibration[0].netfilter_link.detail


@pytest.mark.parametrize("name", ("fentry", "kprobe"))
def test_fine_points_answer_with_a_reason(calibration: tuple, name: str) -> None:
    """Unavailable here (EPERM / CONFIG_KPROBES off); a kernel that allows them may say available."""
    result, _, _ = calibration
    probe = result[name]
    assert isinstance(probe.available, bool)
    assert probe.detail.strip()
    if not probe.available:
        assert "tp_btf" in probe.without or "covers the same" in probe.without


def test_verdict_and_best_for(calibration: tuple) -> None:
    result, _, _ = calibration
    assert result.can_trace_hops
    assert result.verdict().startswith("per-hop tracing can run here")
    assert result.best_for("hops") == "tp_btf"
    assert result.best_for("netfilter") == "netfilter_link"
    assert result.best_for("cpu") == "perf_event"


def test_drop_reasons_and_versions(calibration: tuple) -> None:
    result, _, _ = calibration
    assert result.drop_reasons.available  # kernel 6.18 has enum skb_drop_reason
    assert result.kernel == os.uname().release and result.arch == os.uname().machine
    assert result.libbpf.startswith("v1.")


def test_calibration_leaves_nothing_behind(calibration: tuple) -> None:
    _, before, after = calibration
    assert after["our_programs"] == [] and after["probe_netns"] == []
    assert after["tracefs_mounts"] == before["tracefs_mounts"]
    new_links = set(after["links"]) - set(before["links"])
    assert not new_links, f"links left behind: {new_links}"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cniprof", "doctor", *args], check=False, cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})


def test_cli_json_has_every_feature_and_leaves_nothing() -> None:
    before = leftovers()
    proc = run_cli("--json")
    after = settled_leftovers()
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert list(data["features"]) == list(NAMES)
    assert data["per_hop_tracing"] is True
    assert Features.from_dict(data).tp_btf.available
    objects = data["bpf_objects"]
    assert objects["machine"] == os.uname().machine and objects["dir"] == str(object_dir())
    assert "hops" in objects["objects"] and "features" in objects["objects"]
    assert objects["available"]["x86_64"] == objects["available"]["aarch64"] == objects["objects"]
    assert after["our_programs"] == [] and after["probe_netns"] == []
    assert not set(after["links"]) - set(before["links"])


def test_cli_table() -> None:
    proc = run_cli()
    assert proc.returncode == 0, proc.stderr
    for label in features.LABELS.values():
        assert label in proc.stdout
    assert "✓ per-hop tracing can run here" in proc.stdout
    assert f"BPF objects: {os.uname().machine} (" in proc.stdout and "carried for x86_64, aarch64" in proc.stdout
