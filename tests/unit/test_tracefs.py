# SPDX-License-Identifier: Apache-2.0
"""The tracefs side of the kprobe fallback's return probe, on plain files (this host has no kprobes; the kernel
matrix guests run the real one): event definitions are appended, never truncating kprobe_events; stale events of
dead processes are removed, live ones and other tools' kept; kernel-internal errnos get their names."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cniprof.bpf import tracefs
from cniprof.bpf.libbpf import errno_text


def dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(proc.stdout)


def test_stale_events_of_dead_processes_are_removed_and_nothing_else(tmp_path: Path) -> None:
    gone = dead_pid()
    events = tmp_path / "kprobe_events"
    lines = [f"r64:cniprof/nf_hook_slow_{gone} nf_hook_slow", f"r64:cniprof/nf_hook_slow_{os.getpid()} nf_hook_slow",
             "p:kprobes/someone_else_1 tcp_v4_connect", f"r:otherdir/nf_hook_slow_{gone} nf_hook_slow"]
    events.write_text("\n".join(lines) + "\n")
    assert tracefs.remove_stale(tmp_path) == [f"nf_hook_slow_{gone}"]
    # a regular file stands in for kprobe_events: the removal is appended, the definitions are all still there
    assert events.read_text().splitlines() == [*lines, f"-:cniprof/nf_hook_slow_{gone}"]


def test_an_event_is_named_after_function_and_process_with_a_bounded_maxactive() -> None:
    event = tracefs.ReturnProbeEvent("nf_hook_slow", 100_000)
    assert event.name == f"nf_hook_slow_{os.getpid()}"
    assert event.maxactive == tracefs.MAXACTIVE_MAX
    assert event.missed() is None  # not created
    event.remove()  # nothing to remove: no error, no tracefs access
    with pytest.raises(ValueError):
        tracefs.ReturnProbeEvent("nf_hook_slow; rm", 8)


@pytest.mark.parametrize(("ncpu", "want"), [(1, 64), (4, 64), (16, 256), (1024, tracefs.MAXACTIVE_MAX)])
def test_maxactive_is_sixteen_per_cpu_within_bounds(ncpu: int, want: int) -> None:
    assert tracefs.maxactive_for(ncpu) == want


def test_kernel_internal_errnos_have_names() -> None:
    assert errno_text(524) == "Operation is not supported (ENOTSUPP, 524)"
    assert errno_text(1) == "Operation not permitted (EPERM)"
    assert "Unknown" not in errno_text(524)
