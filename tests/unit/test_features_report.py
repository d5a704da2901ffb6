# SPDX-License-Identifier: Apache-2.0
"""The doctor report from constructed Features (no kernel involved): table, verdict, JSON, fallbacks, root check."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
from rich.console import Console

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cniprof.bpf import features
from cniprof.bpf.features import NAMES, Features
from cniprof.cli import doctor
from cniprof.cli.main import main
from cniprof.errors import EnvironmentProblem

# What this project's reference machine answers (kernel 6.18 without kprobes, fentry refused).
MACHINE = {name: (True, f"{name} ok") for name in NAMES} | {
    "fentry": (False, "the kernel refused to load the fentry program on ip_rcv: Operation not permitted (EPERM)"),
    "kprobe": (False, "the kernel is built without kprobes (CONFIG_KPROBES is not set)"),
}


def make(**overrides: tuple[bool, str]) -> Features:
    return features.build("6.18.0-test", "x86_64", "v1.1 (libbpf.so.1.1.2)", MACHINE | overrides)


def rendered(result: Features) -> str:
    console = Console(file=io.StringIO(), width=220, color_system=None)
    doctor.render(result, console)
    return console.file.getvalue()


def test_table_has_every_feature_status_and_detail() -> None:
    out = rendered(make())
    assert "kernel 6.18.0-test (x86_64), libbpf v1.1 (libbpf.so.1.1.2)" in out
    for name in NAMES:
        assert features.LABELS[name] in out
    assert out.count("✓") == len(NAMES) - 2 + 1  # available rows + the verdict mark
    assert out.count("✗") == 2
    assert "Operation not permitted (EPERM)" in out
    assert "CONFIG_KPROBES is not set" in out


def test_missing_fine_points_are_explained_as_fine() -> None:
    result = make()
    assert not result.fentry.available and not result.kprobe.available
    for probe in (result.fentry, result.kprobe):
        assert probe.without.startswith("fine, hop tracking uses tp_btf")
        assert "br_handle_frame" in probe.without and "nf_hook_slow" in probe.without
    out = rendered(result)
    assert "without it: fine, hop tracking uses tp_btf" in " ".join(out.split())


def test_coverage_only_shown_for_missing_features() -> None:
    out = " ".join(rendered(make()).split())
    assert out.count("without it:") == 2
    assert make().perf_event.without not in out  # available: its cost is not shown


def test_verdict_when_hops_can_run() -> None:
    result = make()
    assert result.can_trace_hops
    verdict = result.verdict()
    assert verdict.startswith("per-hop tracing can run here")
    assert "netfilter cost per hook" in verdict and "CPU sampling" in verdict
    assert "without finer fentry/kprobe points" in verdict
    assert "✓ per-hop tracing can run here" in rendered(result)


def test_verdict_when_tp_btf_is_missing() -> None:
    result = make(tp_btf=(False, "the kernel refused to load the tp_btf program: Invalid argument (EINVAL)"))
    assert not result.can_trace_hops
    assert result.verdict() == "per-hop tracing cannot run here: tp_btf unavailable"
    assert "✗ per-hop tracing cannot run here" in rendered(result)
    assert "no finer points" in result.fentry.without  # "fine" is no longer true without tp_btf


def test_best_for_follows_preferences_and_fallbacks() -> None:
    result = make()
    assert result.best_for("hops") == "tp_btf"
    assert result.best_for("netfilter") == "netfilter_link"
    assert result.best_for("cpu") == "perf_event"
    assert result.best_for("fine_points") is None
    fallback = make(netfilter_link=(False, "no"), kprobe=(True, "ok"))
    assert fallback.best_for("netfilter") == "kprobe"
    assert fallback.best_for("fine_points") == "kprobe"
    assert "nf_hook_slow" in fallback.netfilter_link.without
    assert fallback.fentry.without == "nothing: kprobe covers the same finer points"
    with pytest.raises(ValueError):
        result.best_for("teleport")


def test_json_round_trip_has_every_feature() -> None:
    result = make()
    data = json.loads(json.dumps(result.to_dict()))
    assert list(data["features"]) == list(NAMES)
    for name, entry in data["features"].items():
        assert set(entry) == {"available", "detail", "used_for", "without"}
        assert isinstance(entry["available"], bool) and entry["detail"] and entry["used_for"], name
    assert data["per_hop_tracing"] is True
    assert data["best_for"]["netfilter"] == "netfilter_link"
    assert Features.from_dict(data) == result


def test_doctor_refuses_without_root(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert main(["doctor"]) == EnvironmentProblem.exit_code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "run it as root" in err and "Traceback" not in err
    with pytest.raises(EnvironmentProblem, match="run as root"):
        features.calibrate()
