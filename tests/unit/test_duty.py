# SPDX-License-Identifier: Apache-2.0
"""The overhead budget's pure parts (issue 15): the controller's choice of the attached fraction, what the node's
kernel CPU time is read from, the status it reports, and how summary.json and the console carry it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from cniprof.analysis.record import TraceRecord, analyze_record, record_from_files
from cniprof.errors import UsageError
from cniprof.probes import duty
from cniprof.run import trace
from cniprof.ui.live import render_live
from cniprof.ui.tables import overhead_text


class _Probe:  # what DutyCycle touches of a HopProbe without starting
    programs: tuple[str, ...] = ()
    status = None
    is_attached = False


def _period(bpf_ms: float, traffic_ms: float, attached_s: float, control_ms: float = 0.0) -> duty._Period:
    return duty._Period(bpf_ns=bpf_ms * 1e6, control_ns=control_ms * 1e6, traffic_ns=traffic_ms * 1e6,
                        attached_s=attached_s, wall_s=duty.PERIOD_S)


AIMS_AT_2 = 2.0 / duty.AIM  # the budget whose aim is 2 % (the controller aims under the budget)


def test_fraction_holds_cost_at_the_aim() -> None:
    """Attached, the probe costs 100 ms per second; the traffic takes 500 ms of kernel CPU per 0.5 s period.
    2 % of that is 10 ms per period: a tenth of a period attached (10 ms / (100 ms/s x 0.5 s) = 0.2)."""
    d = duty.DutyCycle(_Probe(), budget_pct=AIMS_AT_2)  # type: ignore[arg-type]
    for _ in range(duty.HISTORY):
        d.history.append(_period(bpf_ms=10.0, traffic_ms=500.0, attached_s=0.1))  # exactly on budget
    assert d._next_fraction() == pytest.approx(0.2, rel=0.01)


def test_the_budget_is_a_ceiling_aimed_under() -> None:
    """At the budget itself the probe is over its aim and is held off a little; at 90 % of it, it holds."""
    assert duty.AIM < 1.0
    at_budget = duty.DutyCycle(_Probe(), budget_pct=2.0)  # type: ignore[arg-type]
    for _ in range(duty.HISTORY):
        at_budget.history.append(_period(bpf_ms=10.0, traffic_ms=500.0, attached_s=0.1))  # 2 % of the traffic
    assert at_budget._next_fraction() < 0.2 * 0.9


def test_fraction_pays_back_an_overspend_and_follows_a_load_step() -> None:
    d = duty.DutyCycle(_Probe(), budget_pct=AIMS_AT_2)  # type: ignore[arg-type]
    for _ in range(duty.HISTORY):
        d.history.append(_period(bpf_ms=20.0, traffic_ms=500.0, attached_s=0.2))  # twice the budget
    assert d._next_fraction() == 0.0  # the debt holds the probe off
    for _ in range(duty.HISTORY):  # the load quadruples: traffic and probe cost per attached second with it
        d.history.append(_period(bpf_ms=40.0, traffic_ms=2000.0, attached_s=0.1))
    assert d._next_fraction() == pytest.approx(0.2, rel=0.01)  # 0.1 s of each 0.5 s holds it exactly


def test_fraction_counts_the_cost_of_a_cycle_and_falls_back_to_the_last_rate() -> None:
    d = duty.DutyCycle(_Probe(), budget_pct=AIMS_AT_2)  # type: ignore[arg-type]
    d._rate = 100e6  # 100 ms per attached second, from the calibration period
    d.history.append(_period(bpf_ms=0.0, traffic_ms=500.0, attached_s=0.0))
    # nothing attached in the history: the last known rate; budget 2 x 10 ms, no cycle cost known yet
    assert d._next_fraction() == pytest.approx(0.4, rel=0.01)
    d.history.clear()
    d.history.append(_period(bpf_ms=10.0, traffic_ms=500.0, attached_s=0.1, control_ms=5.0))
    # 2 % of 1000 ms = 20 ms, 15 ms spent already, 5 ms per cycle: nothing left for the next window
    assert d._next_fraction() == 0.0


def test_full_budget_and_exact_counts_are_traced_whole() -> None:
    assert duty.DutyCycle(_Probe(), budget_pct=100.0).full  # type: ignore[arg-type]
    assert trace.budget_of(trace.TraceOptions(traffic="udp", overhead_budget_pct=2.0)) == 100.0
    assert trace.budget_of(trace.TraceOptions(traffic="ping", overhead_budget_pct=5.0)) == 100.0
    assert trace.budget_of(trace.TraceOptions(traffic="iperf3", overhead_budget_pct=5.0)) == 5.0


@pytest.mark.parametrize("pct", [0.0, -1.0, 100.5])
def test_budget_outside_0_100_is_a_usage_error(pct: float) -> None:
    with pytest.raises(UsageError, match="--overhead-budget"):
        trace.preflight(trace.TraceOptions(overhead_budget_pct=pct))


def test_kernel_cpu_is_system_irq_softirq(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 5 300 9000 40 7 200 11 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n")
    hz = duty.os.sysconf("SC_CLK_TCK")
    assert duty.kernel_cpu_ns(str(stat)) == (300 + 7 + 200) * 1_000_000_000 // hz


def test_process_age_is_this_process() -> None:
    assert 0.0 < trace.process_age_s() < 3600 * 24


OVERHEAD = {"attach_s": 0.31, "budget_pct": 2.0, "mode": "duty-cycled", "coverage": 0.21, "tracked_share": 0.2,
            "own_cost_pct": 1.93, "own_cpu_s": 0.1, "bpf_cpu_s": 0.08, "control_cpu_s": 0.02,
            "traffic_cpu_s": 5.2, "events": 1000, "dispatch_ns": 60.0,
            "programs": {"on_dev_queue": {"run_cnt": 600, "run_time_ns": 54000, "ns_per_event": 90.0},
                         "on_netif_receive_skb": {"run_cnt": 400, "run_time_ns": 30000, "ns_per_event": 75.0}},
            "period_s": 0.5, "drain_s": 0.01, "windows": 20, "timeline": []}


def test_overhead_line() -> None:
    line = overhead_text(OVERHEAD)
    assert line.startswith("overhead: attached 0.31 s after start")
    assert "coverage 21 % of the time" in line and "own cost 1.93 % of the node's kernel CPU (budget 2 %)" in line
    assert "84 ns/event in programs + 60 dispatch" in line
    assert "cniprof process" not in line  # not measured in this block
    measured = overhead_text({**OVERHEAD, "process_cpu_s": 0.05, "elapsed_s": 10.0})
    assert measured.endswith("cniprof process 5.0 ms CPU/s (view, reads, generators; not budgeted)")
    assert overhead_text(None) == ""
    assert "(full: exact counts)" in overhead_text({**OVERHEAD, "mode": "full", "coverage": 1.0})


def test_summary_carries_the_overhead_block_and_reads_it_back() -> None:
    flannel_snapshot = json.loads((Path(__file__).parent / "data" / "recorded_flannel_udp23.json").read_text())
    record = TraceRecord(cni="flannel", mode="vxlan", path="cross-node", snapshot=flannel_snapshot,
                         duration_s=10.0, overhead=OVERHEAD)
    summary = analyze_record(record).summary
    assert summary["overhead"] == OVERHEAD
    again = record_from_files(summary, flannel_snapshot, None, None, None)
    assert again.overhead == OVERHEAD


def test_live_view_shows_coverage_and_own_cost() -> None:
    console = Console(record=True, width=200)
    console.print(render_live("t", None, (1.0, 10.0), None, overhead=OVERHEAD))
    text = console.export_text()
    assert "coverage 21 % of the time" in text and "own cost 1.93 %" in text


def test_stopped_before_its_thread_started() -> None:
    """An interrupt inside start() (the thread object made, never started): close() neither fails nor waits, and
    a thread that starts after the stop touches nothing."""
    d = duty.DutyCycle(_Probe(), budget_pct=2.0)  # type: ignore[arg-type]
    d._thread = duty.threading.Thread(target=d._main, daemon=True)
    d._stats = None
    d.stop()
    assert d._thread is None
    late = duty.threading.Thread(target=d._main, daemon=True)
    late.start()
    late.join(5.0)
    assert not late.is_alive() and d.error is None and d.windows == 0
