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


def test_kprobe_fallback_says_it_is_not_implemented() -> None:
    with pytest.raises(EnvironmentProblem) as e:
        nfhooks.select_attach(calibration(netfilter_link=False, fentry=False))
    msg = str(e.value)
    assert "\n" not in msg and "the kprobe fallback on nf_hook_slow is not implemented" in msg
    assert "netfilter_link says so" in msg and "run without --nf" in msg


def test_the_fentry_programs_are_in_the_object() -> None:
    """Both attach types live in one object: links use nf_first/nf_last, fentry nf_slow_enter/nf_slow_exit."""
    from pathlib import Path

    src = (Path(__file__).resolve().parents[2] / "bpf" / "nfhooks.bpf.c").read_text()
    assert 'SEC("fentry/nf_hook_slow")' in src and 'SEC("fexit/nf_hook_slow")' in src
    for name in (*nfhooks.abi.FENTRY_PROGRAMS, *nfhooks.abi.PROGRAMS):
        assert f" {name}(" in src or f"({name}," in src


def test_nothing_available_is_one_line() -> None:
    with pytest.raises(EnvironmentProblem) as e:
        nfhooks.select_attach(calibration(netfilter_link=False, fentry=False, kprobe=False))
    assert "\n" not in str(e.value) and "neither fentry nor kprobes" in str(e.value)


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
