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
