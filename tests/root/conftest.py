# SPDX-License-Identifier: Apache-2.0
"""Fixtures for tests that need root, real namespaces and real packets.

- `lab`: the flannel/vxlan lab, built once per session and removed at the end.
- `no_netns_leak` (autouse): a test that leaves a new `cniprof-*` namespace behind fails, and the session
  fails if any new one is left at the very end.
- Tests marked `lab_destructive` tear the shared lab down; they are moved after every other test so that tests
  using `lab` never see it disappear.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the package is used from the work tree, not installed
    sys.path.insert(0, str(ROOT))

from cniprof.cni.topology import LAB_NETNS_PREFIX, NETNS_PREFIX, Topology
from cniprof.lab import cleanup, realize, saved

IS_ROOT = os.geteuid() == 0


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "lab_destructive: removes the shared lab; runs after all other tests")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Stable partition: destructive lab tests last (the session `lab` cannot come back with its inodes)."""
    destructive = [i for i in items if i.get_closest_marker("lab_destructive")]
    if destructive:
        items[:] = [i for i in items if not i.get_closest_marker("lab_destructive")] + destructive


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") and not IS_ROOT:
        pytest.skip("needs root (network namespaces)")


def cniprof_namespaces() -> set[str]:
    """Every namespace named like ours (`cniprof-` prefix), the lab's and any other."""
    return set(cleanup.list_lab_namespaces(prefix=NETNS_PREFIX))


def _remove_leaked(leaked: set[str]) -> None:
    """Remove leaked lab namespaces so one leak does not cascade; forget a recorded lab they were part of."""
    cleanup.remove_namespaces(n for n in leaked if n.startswith(LAB_NETNS_PREFIX))
    recorded = saved.load()
    if recorded is not None and set(recorded.namespaces()) & leaked:
        saved.clear()


@pytest.fixture(scope="session", autouse=True)
def _nothing_left_at_session_end() -> Iterator[None]:
    """Session-scoped and autouse, so it is set up first and torn down last: after the `lab` teardown.

    Compares with the start of the session: a lab someone brought up by hand before running the tests is
    reused by `lab` and left alone.
    """
    before = cniprof_namespaces()
    yield
    left = cniprof_namespaces() - before
    if left:
        _remove_leaked(left)
        pytest.fail(f"cniprof namespaces left at the end of the session: {sorted(left)}")


@pytest.fixture(autouse=True)
def no_netns_leak() -> Iterator[None]:
    """Fail the test if it leaves a `cniprof-*` namespace that was not there before it (the lab is set up
    earlier, being session-scoped, so it counts as "before")."""
    before = cniprof_namespaces()
    yield
    leaked = cniprof_namespaces() - before
    if leaked:
        _remove_leaked(leaked)
        pytest.fail(f"test leaked namespaces: {sorted(leaked)}")


@pytest.fixture(scope="session")
def lab() -> Iterator[Topology]:
    """The flannel/vxlan lab, up for the whole session and removed at its end if this session built it.

    Leftovers of a crashed earlier run (namespaces without a state file, an incomplete lab) are removed first.
    """
    if not IS_ROOT:
        pytest.skip("the lab needs root")
    recorded, existing = saved.load(), set(cleanup.list_lab_namespaces())
    if existing and (recorded is None or not set(recorded.namespaces()) <= existing):
        cleanup.teardown()
    topology, created = realize.up("flannel", "vxlan")
    try:
        yield topology
    finally:
        if created:
            cleanup.teardown()


@pytest.fixture
def no_lab() -> Iterator[None]:
    """For `lab_destructive` tests: start and end with no lab at all."""
    if not IS_ROOT:
        pytest.skip("the lab needs root")
    cleanup.teardown()
    yield
    cleanup.teardown()
