# SPDX-License-Identifier: Apache-2.0
"""probe_types() reads back from a trace's summary.json what each feature used, in the words of `cniprof doctor
--json`'s choices; it must understand every name the hop probe gives its programs."""

from __future__ import annotations

from cniprof.analysis.summary import NO_REASON, probe_types
from cniprof.probes.hops_abi import ATTACH_POINT, DROP_PROGRAMS


def summary(programs: list[str], **blocks: object) -> dict:
    return {"probes": [ATTACH_POINT[p] for p in programs], **blocks}


def test_a_kernel_with_drop_reasons() -> None:
    got = probe_types(summary(["on_dev_queue", "on_netif_receive_skb", "on_consume_skb", DROP_PROGRAMS[True]],
                              cpu={"samples": 3}, netfilter={"attach": "netfilter_link"}))
    assert got == {"hops": "tp_btf", "drops": "tp_btf", "cpu": "perf_event", "netfilter": "netfilter_link"}


def test_a_kernel_before_drop_reasons_without_cpu_or_netfilter() -> None:
    assert ATTACH_POINT[DROP_PROGRAMS[False]].endswith(NO_REASON)
    got = probe_types(summary(["on_dev_queue", "on_consume_skb", DROP_PROGRAMS[False]]))
    assert got == {"hops": "tp_btf", "drops": "tp_btf_noreason", "cpu": None, "netfilter": None}


def test_nothing_traced_is_nothing_used() -> None:
    assert probe_types({}) == {"hops": None, "drops": None, "cpu": None, "netfilter": None}
