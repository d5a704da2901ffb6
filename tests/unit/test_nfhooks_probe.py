# SPDX-License-Identifier: Apache-2.0
"""The netfilter cost probe's pure parts: which attach type it picks, and its argument checks."""

from __future__ import annotations

import pytest

from cniprof.bpf import features
from cniprof.errors import EnvironmentProblem, UsageError
from cniprof.probes import nfhooks
from cniprof.probes.nfhooks import NfHookProbe


def calibration(**available: bool) -> features.Features:
    results = {name: (available.get(name, True), f"{name} says so") for name in features.NAMES}
    return features.build("6.18", "x86_64", "v1.1", results)


def test_links_are_preferred() -> None:
    assert nfhooks.select_attach(calibration()) == "netfilter_link"
    assert nfhooks.select_attach(calibration(fentry=False, kprobe=False)) == "netfilter_link"


def test_fentry_is_the_fallback_where_links_are_refused() -> None:
    assert nfhooks.select_attach(calibration(netfilter_link=False)) == "fentry"
    assert nfhooks.select_attach(calibration(netfilter_link=False, kprobe=False)) == "fentry"


def test_kprobe_is_the_last_resort() -> None:
    """arm64 before 6.4: no links, fentry attach ENOTSUPP (no DYNAMIC_FTRACE_WITH_DIRECT_CALLS)."""
    assert nfhooks.select_attach(calibration(netfilter_link=False, fentry=False)) == "kprobe"


def test_the_probe_chooses_what_doctor_says() -> None:
    for off in ((), ("netfilter_link",), ("netfilter_link", "fentry")):
        cal = calibration(**{name: False for name in off})
        assert nfhooks.select_attach(cal) == cal.choices()["netfilter"] == cal.to_dict()["choices"]["netfilter"]


def test_every_attach_type_has_its_programs_in_the_object() -> None:
    """All three attach types live in one object: links nf_first/nf_last, fentry nf_slow_enter/nf_slow_exit,
    kprobe nf_kp_enter/nf_kp_exit."""
    from pathlib import Path

    src = (Path(__file__).resolve().parents[2] / "bpf" / "nfhooks.bpf.c").read_text()
    assert 'SEC("fentry/nf_hook_slow")' in src and 'SEC("fexit/nf_hook_slow")' in src
    assert 'SEC("kprobe/nf_hook_slow")' in src and 'SEC("kretprobe/nf_hook_slow")' in src
    assert set(nfhooks.abi.PROGRAMS_OF) == set(features.PURPOSES["netfilter"])
    for names in nfhooks.abi.PROGRAMS_OF.values():
        for name in names:
            assert f" {name}(" in src or f"({name}," in src


def test_nothing_available_is_one_line() -> None:
    with pytest.raises(EnvironmentProblem) as e:
        nfhooks.select_attach(calibration(netfilter_link=False, fentry=False, kprobe=False))
    assert "\n" not in str(e.value) and "refuses BPF netfilter links (netfilter_link says so)" in str(e.value)
    assert "kprobes (kprobe says so): run without --nf" in str(e.value)


def test_argument_checks() -> None:
    with pytest.raises(UsageError, match="no namespace"):
        NfHookProbe([])
    with pytest.raises(UsageError, match="at most 16"):
        NfHookProbe([f"ns{i}" for i in range(17)])
    with pytest.raises(UsageError, match="at most 16"):
        NfHookProbe(["ns"], addresses=[f"10.0.0.{i}" for i in range(17)])
    with pytest.raises(UsageError, match="empty address filter"):
        NfHookProbe(["ns"], addresses=[])
    with pytest.raises(UsageError, match="not an IPv4"):
        NfHookProbe(["ns"], addresses=["10.0.0.300"])
    p = NfHookProbe(["ns", "ns", "/proc/1/ns/net"], addresses=["10.0.0.1", "10.0.0.1"])
    assert p.netns == ["ns", "/proc/1/ns/net"] and p.addresses == ["10.0.0.1"]
    assert nfhooks.netns_path("ns") == "/run/netns/ns" and nfhooks.netns_path("/proc/1/ns/net") == "/proc/1/ns/net"
    p.close()  # closing a probe that never started is fine


def test_priorities_avoid_the_reserved_extremes() -> None:
    assert nfhooks.PRIORITY_FIRST == -(2**31) + 1 and nfhooks.PRIORITY_LAST == 2**31 - 2
    assert nfhooks.HOOKS == ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")
