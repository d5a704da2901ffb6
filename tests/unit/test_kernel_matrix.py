# SPDX-License-Identifier: Apache-2.0
"""The kernel matrix's host side without booting anything: README's kernel table is generated from
tests/vm/expected.json, and the comparison with a guest's result reports every difference."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("vm_matrix", ROOT / "tests/vm/matrix.py")
matrix = importlib.util.module_from_spec(spec)
sys.modules["vm_matrix"] = matrix  # dataclasses look their module up there
spec.loader.exec_module(matrix)


def readme_table() -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- kernel-matrix:begin[^>]*-->\n(.*?)<!-- kernel-matrix:end -->", text, re.DOTALL)
    assert m, "README.md has no kernel-matrix section"
    return m.group(1)


def test_readme_table_is_generated_from_expected_results() -> None:
    assert readme_table() == matrix.table(matrix.load_expected())


def test_expected_results_cover_the_six_kernels_with_every_feature() -> None:
    expected = matrix.load_expected()["kernels"]
    assert sorted(expected) == sorted(matrix.KERNEL_IDS)
    for kid, entry in expected.items():
        assert set(entry["choices"]) == {"hops", "drops", "cpu", "netfilter"}, kid
        assert set(entry["choices"].values()) <= set(matrix.PROBE_NAMES), kid
        for feature, probe in entry["choices"].items():  # what doctor chooses, the guest loaded
            if probe and feature != "drops":
                assert entry["load"][feature] == "ok", (kid, feature)


def test_differences_name_every_leaf() -> None:
    want = {"choices": {"netfilter": "kprobe", "cpu": "perf_event"}, "load": {"hops": "ok"}}
    got = {"choices": {"netfilter": "fentry", "cpu": "perf_event"}, "load": {"hops": "ok", "cpu": "ok"}}
    assert matrix.differences(want, got) == [
        'choices.netfilter: expected "kprobe", got "fentry"',
        'load.cpu: not expected, got "ok"',
    ]
    assert matrix.differences(want, want) == []


def test_a_guest_without_result_is_a_failure() -> None:
    outcome = matrix.Outcome("6.1-arm64", 1.0, None, Path("/dev/null"), "the guest printed no result")
    assert matrix.compare(outcome, "load", matrix.load_expected()) == ["the guest printed no result"]


def test_the_three_attach_types_expect_the_same_most_expensive_hook() -> None:
    """Links (6.12), fentry (x86_64 5.10/6.1) and kprobes (arm64 5.10/6.1) time the same pod-to-service traffic:
    every kernel's pinned result must name the same hook, so a guest that disagrees fails the matrix."""
    expected = matrix.load_expected()["kernels"]
    slowest = {kid: e["trace"]["netfilter"]["slowest"] for kid, e in expected.items() if "trace" in e}
    attach = {expected[kid]["trace"]["netfilter"]["attach"] for kid in slowest}
    assert attach == {"netfilter_link", "fentry", "kprobe"}, attach
    assert len(set(slowest.values())) == 1, slowest


def test_every_kernel_has_its_full_level_pinned() -> None:
    expected = matrix.load_expected()["kernels"]
    assert [kid for kid, e in expected.items() if "trace" not in e] == []
    for kid, e in expected.items():
        assert all(e["trace"]["doctor_said_what_trace_used"].values()), kid


def test_a_result_line_broken_by_a_console_message_is_a_failure_not_a_crash() -> None:
    tag = matrix.RESULT_TAG
    assert matrix.parse_result(f'boot\n{tag}{{"level": "load"}}\r\n') == ({"level": "load"}, "")
    result, problem = matrix.parse_result(f'{tag}{{"level": "lo[  12.3] eth0: link up\n')
    assert result is None and problem.startswith("the guest's result line is not JSON")
    assert matrix.parse_result("no tag here") == (None, "the guest printed no result")
