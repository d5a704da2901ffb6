# SPDX-License-Identifier: Apache-2.0
"""benchmarks/overhead.py --method blocks, its pure part: placing iperf3's interval reports on the clock,
classifying them against the tracer processes' times (traced, untraced, excluded) and the per-block ratio, on
synthetic timelines shaped like a real run (0.5 s intervals, a 4 s window, 0.4-0.6 s start-up, 2.5-3 s export)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from cniprof.errors import CniprofError

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("overhead_bench", ROOT / "benchmarks" / "overhead.py")
assert _spec is not None and _spec.loader is not None
ov = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = ov  # dataclasses look their module up while the class is made
_spec.loader.exec_module(ov)

TRACED, UNTRACED, EXCLUDED = ov.TRACED, ov.UNTRACED, ov.EXCLUDED
STEP = 0.5
LAUNCH = 100.0  # monotonic time of the client's launch


def spans(*starts: float, startup: float = 0.5, window: float = 4.0, export: float = 2.8) -> list:
    """Tracer processes started at these times (s after LAUNCH), attached `startup` later, gone `export` after
    their window."""
    out = []
    for s in starts:
        att = LAUNCH + s + startup
        out.append(ov.Span(LAUNCH + s, att, att + window, att + window + export))
    return out


def grid(total_s: float, rate, slop: float = 0.0) -> list:
    """0.5 s intervals from LAUNCH over total_s, rate(t) bits/s at the interval's middle; slop widens each
    interval's end (the uncertainty of the test's start)."""
    n = round(total_s / STEP)
    return [ov.Interval(LAUNCH + i * STEP, LAUNCH + (i + 1) * STEP + slop, rate(i * STEP + STEP / 2))
            for i in range(n)]


def labels(ivs: list, sps: list) -> list:
    return [ov.classify(iv, sps, LAUNCH + ov.CONNECT_WARMUP_S) for iv in ivs]


def label_at(ivs: list, lab: list, t: float) -> tuple[str, int]:
    """The label of the interval that begins at t s after LAUNCH."""
    (i,) = [k for k, iv in enumerate(ivs) if abs(iv.start - LAUNCH - t) < 1e-9]
    return lab[i]


# ------------------------------------------------------------------------------------------------ classification


def test_every_phase_of_a_tracer_is_labelled():
    sps = spans(5.2)  # start 5.2, attached 5.7, window to 9.7, exit 12.5
    ivs = grid(20, lambda t: 1e10)
    lab = labels(ivs, sps)
    assert label_at(ivs, lab, 0.5) == (EXCLUDED, -1)  # the connection's first second
    assert label_at(ivs, lab, 1.0) == (UNTRACED, 0)
    assert label_at(ivs, lab, 4.5) == (UNTRACED, 0)  # ends at 5.0, before the process starts
    assert label_at(ivs, lab, 5.0) == (EXCLUDED, -1)  # the start-up: process running, not attached
    assert label_at(ivs, lab, 5.5) == (EXCLUDED, -1)  # straddles the attach
    assert [label_at(ivs, lab, t) for t in (6.0, 6.5, 7.0, 7.5, 8.0, 8.5, 9.0)] == [(TRACED, 0)] * 7
    assert label_at(ivs, lab, 9.5) == (EXCLUDED, -1)  # straddles the window's end
    for t in (10.0, 10.5, 11.0, 11.5, 12.0):  # the export
        assert label_at(ivs, lab, t) == (EXCLUDED, -1)
    assert label_at(ivs, lab, 12.5) == (EXCLUDED, -1)  # the gap after the exit (12.5 + GAP_S)
    assert label_at(ivs, lab, 13.0) == (EXCLUDED, -1)
    assert label_at(ivs, lab, 13.5) == (UNTRACED, 1)
    assert label_at(ivs, lab, 19.5) == (UNTRACED, 1)


def test_an_interval_touching_the_export_is_never_counted():
    """Whatever the timing, no counted interval overlaps [window end, exit + gap) or [process start, attach)."""
    for shift in (0.0, 0.13, 0.26, 0.49):
        sps = spans(5.0 + shift, 16.0 + shift)
        ivs = grid(30, lambda t: 1e10, slop=0.015)
        for iv, (lab, _) in zip(ivs, labels(ivs, sps)):
            for sp in sps:
                busy = [(sp.start, sp.attached), (sp.window_end, sp.exit + ov.GAP_S)]
                if any(iv.end > a and iv.start < b for a, b in busy):
                    assert lab == EXCLUDED, (shift, iv, sp)
            if lab == TRACED:
                assert any(sp.attached <= iv.start and iv.end <= sp.window_end for sp in sps)


def test_the_start_uncertainty_is_held_against_the_interval():
    """An interval that would fit the window if the test started at the launch, but not if it started at the
    latest it can have, is not traced."""
    sps = spans(5.0)  # window [5.5, 9.5]
    exact = ov.Interval(LAUNCH + 9.0, LAUNCH + 9.5, 1e10)
    late = ov.Interval(LAUNCH + 9.0, LAUNCH + 9.515, 1e10)
    assert ov.classify(exact, sps, LAUNCH + 1) == (TRACED, 0)
    assert ov.classify(late, sps, LAUNCH + 1) == (EXCLUDED, -1)
    before = ov.Interval(LAUNCH + 4.5, LAUNCH + 5.015, 1e10)  # may reach into the start-up
    assert ov.classify(before, sps, LAUNCH + 1) == (EXCLUDED, -1)


def test_untraced_blocks_are_numbered_by_the_tracers_before_them():
    sps = spans(5.0, 16.0, 27.0)
    ivs = grid(40, lambda t: 1e10)
    lab = labels(ivs, sps)
    untraced = {k for x, k in lab if x == UNTRACED}
    traced = {k for x, k in lab if x == TRACED}
    assert untraced == {0, 1, 2, 3} and traced == {0, 1, 2}
    # in time order: U0 T0 U1 T1 U2 T2 U3
    order = [f"{x[0]}{k}" for x, k in lab if x != EXCLUDED]
    assert list(dict.fromkeys(order)) == ["u0", "t0", "u1", "t1", "u2", "t2", "u3"]


# ------------------------------------------------------------------------------------------------ placing


def _doc(n: int, step: float = STEP) -> dict:
    return {"start": {"timestamp": {"timesecs": 1}},
            "intervals": [{"sum": {"start": i * step, "end": (i + 1) * step + 0.0004, "bits_per_second": 1e10 + i,
                                   "omitted": False}} for i in range(n)]}


def test_intervals_are_placed_between_the_launch_and_the_exit():
    doc = _doc(8)  # a 4.0004 s test, its client gone 12 ms after it
    ivs = ov.place_intervals(doc, launched=50.0, exited=54.0124)
    assert ov.start_bounds(doc, 50.0, 54.0124) == pytest.approx((50.0, 50.012))
    assert ivs[0].start == pytest.approx(50.0) and ivs[0].end == pytest.approx(50.512 + 0.0004)
    assert ivs[-1].start == pytest.approx(53.5) and ivs[-1].end == pytest.approx(54.0124)
    assert [iv.bps for iv in ivs] == [1e10 + i for i in range(8)]


def test_without_a_seen_exit_the_start_is_bounded_by_the_launch():
    earliest, latest = ov.start_bounds(_doc(4), 50.0, None)
    assert (earliest, latest) == (50.0, 50.0 + ov.LAUNCH_BOUND_S)
    # an exit that came "too early" (a clock step) never places the start before the launch
    assert ov.start_bounds(_doc(4), 50.0, 51.0) == (50.0, 50.0)


def test_omitted_intervals_are_skipped_and_none_is_an_error():
    doc = _doc(4)
    doc["intervals"][0]["sum"]["omitted"] = True
    assert len(ov.place_intervals(doc, 0.0, 3.0)) == 3
    with pytest.raises(CniprofError, match="no intervals"):
        ov.place_intervals({"intervals": []}, 0.0, 1.0)


# ------------------------------------------------------------------------------------------------ ratios


def _run(rate, starts=(5.0, 16.5, 28.0), total=40.0, **kw):
    sps = spans(*starts, **kw)
    ivs = grid(total, rate)
    return ov.block_ratios(ivs, labels(ivs, sps), len(sps)), sps


def _inside(sps, t):
    return any(sp.attached <= LAUNCH + t <= sp.window_end for sp in sps)


def test_a_steady_cost_is_measured_exactly():
    sps = spans(5.0, 16.5, 28.0)
    rs, _ = _run(lambda t: 1e10 * (0.97 if _inside(sps, t) else 1.0))
    assert [r.ratio for r in rs] == pytest.approx([0.97] * 3)
    assert [r.counts[1] for r in rs] == [8, 8, 8]  # the windows fall on the interval grid here


def test_a_drift_cancels():
    """Throughput falling 1 %/s (and a start-up shorter than the export: the neighbours are not equally far
    from the window): the block ratio is still the cost alone. The untraced block before alone would not be."""
    sps = spans(5.0, 16.5, 28.0)

    def rate(t):
        return 1e10 * (1 - 0.01 * t) * (0.97 if _inside(sps, t) else 1.0)

    rs, _ = _run(rate)
    assert [r.ratio for r in rs] == pytest.approx([0.97] * 3, rel=1e-9)
    assert all(abs(r.traced / r.before - 0.97) > 0.02 for r in rs)  # what the drift would have done
    assert all(abs(r.traced / ((r.before + r.after) / 2) - 0.97) > 0.002 for r in rs)  # plain mean: not equal


def test_a_stall_of_the_host_does_not_move_the_ratio():
    """One 0.5 s interval at half (the machine's own stalls: seen traced and untraced alike) in a traced block
    and in an untraced one: each block's level is its median interval, so the ratio stays the cost; a mean would
    have moved it by several percent."""
    sps = spans(5.0, 16.5, 28.0)
    stalls = (7.0, 13.0)  # inside the first window; in the untraced block after it

    def rate(t):
        stalled = any(s <= t < s + 0.5 for s in stalls)
        return 1e10 * (0.97 if _inside(sps, t) else 1.0) * (0.5 if stalled else 1.0)

    rs, _ = _run(rate)
    assert [r.ratio for r in rs] == pytest.approx([0.97] * 3, rel=1e-9)


def test_the_export_does_not_move_the_ratio():
    """The export after the window (and the start-up before it) costs much more than the tracing: left out, it
    changes nothing; counted, it would show."""
    sps = spans(5.0, 16.5, 28.0)

    def rate(t):
        for sp in sps:
            if sp.start <= LAUNCH + t < sp.attached or sp.window_end <= LAUNCH + t < sp.exit:
                return 0.5e10
        return 1e10 * (0.97 if _inside(sps, t) else 1.0)

    rs, _ = _run(rate)
    assert [r.ratio for r in rs] == pytest.approx([0.97] * 3)
    assert all(r.before == pytest.approx(1e10) and r.after == pytest.approx(1e10) for r in rs)


def test_a_block_without_neighbours_has_no_ratio():
    # the last tracer exits at the very end of the connection: no untraced block after it
    rs, _ = _run(lambda t: 1e10, starts=(5.0, 16.5), total=24.0)
    assert rs[0].ratio == pytest.approx(1.0)
    assert rs[1].after is None and rs[1].ratio is None and rs[1].counts[2] == 0


def test_spread_of_ratios():
    s = ov.spread([0.9, 1.0, 0.95, 0.97, 0.99])
    assert (s["min"], s["max"]) == (0.9, 1.0)
    assert s["q1"] == pytest.approx(0.95) and s["q3"] == pytest.approx(0.99)
    assert ov.spread([0.98]) == {"min": 0.98, "q1": 0.98, "q3": 0.98, "max": 0.98}


# ------------------------------------------------------------------------------------------------ the plan


def _simulate(n: int, duration: float, startup: float, export: float, est=(1.0, 4.0), jitter: float = 0.002):
    """The timing of blocks_run's loop with tracers that take `startup` and `export`, and a little lateness at
    every step (sleeps wake late): (blocks that fit, untraced block lengths, the tail after the last exit)."""
    end = ov.run_seconds(n, duration, *est)
    now, block_from, lengths, fitted, seen = 0.0, ov.CONNECT_WARMUP_S, [], 0, []
    for i in range(n):
        pair_s = ov.per_pair_s(duration, *ov.expected_phases(est, seen))
        now = max(now, ov.untraced_until(block_from, end, i, n, duration, pair_s)) + jitter
        if not ov.room_for_block(now, end, pair_s):
            break
        lengths.append(now - block_from)
        exit_ = now + startup + duration + export + jitter
        seen.append((startup, export))
        block_from, now, fitted = exit_ + ov.GAP_S, exit_, fitted + 1
    return fitted, lengths, end - block_from


@pytest.mark.parametrize("n", [1, 2, 3, 9, 20])
@pytest.mark.parametrize("duration", [1.0, 4.0, 10.0])
def test_the_plan_fits_every_block(n, duration):
    """Tracers as slow as planned, or faster (as measured here): every block fits, every untraced block is at
    least `duration` long, the one after the last tracer too (within END_S)."""
    for startup, export in ((1.0, 4.0), (0.4, 2.0), (0.3, 1.6)):
        fitted, lengths, tail = _simulate(n, duration, startup, export)
        assert fitted == n, (startup, export)
        assert min(lengths) >= duration and tail >= duration - ov.END_S


def test_slack_is_spread_evenly():
    """Tracers faster than planned: once the first has shown it, the time left over lengthens the untraced
    blocks after it alike, the last one included, rather than piling up at the end."""
    fitted, lengths, tail = _simulate(9, 4.0, 0.4, 2.0)
    assert fitted == 9
    assert max(lengths[1:]) - min(lengths[1:]) < 0.5 and abs(tail - ov.END_S - lengths[-1]) < 0.6
    assert lengths[1] > 5.0  # about 18 s left over, for 9 blocks


def test_tracers_slower_than_planned_leave_blocks_out():
    fitted, _, _ = _simulate(9, 4.0, 2.0, 8.0)
    assert 0 < fitted < 9


# ------------------------------------------------------------------------------------------------ the command line


def test_method_option(capsys):
    assert ov.parse_args([]).method == "pairs"
    assert ov.parse_args(["--method", "blocks"]).method == "blocks"
    assert ov.main(["--method", "block"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown --method 'block'" in err


def test_summary_and_report_of_blocks():
    info = ov.Traced(attach_s=0.4, peak_rss_mb=170.0, overhead={"coverage": 0.2, "own_cost_pct": 2.0})
    blocks = [ov.Block("cniprof", "iperf3", i, 1e10, r * 1e10, 1e10, 1e10, (8, 7, 8), info)
              for i, r in enumerate((0.97, 0.99, 0.98))]
    pairs = [ov.Pair("cniprof", "rr", 0, 50.0, 51.0, False, info)]
    summary = ov.summarize([*blocks, *pairs])
    row = summary["cniprof"]
    assert row["iperf3"]["method"] == "blocks" and row["iperf3"]["median_ratio"] == pytest.approx(0.98)
    assert row["rr"]["method"] == "pairs" and row["rr"]["median_ratio"] == pytest.approx(1.02)
    text = ov.report(summary, "header")
    assert "cniprof iperf3 block ratios: 0.970 0.990 0.980 (min 0.970, IQR 0.975-0.985, max 0.990)" in text
    assert "cniprof rr pair ratios: 1.020" in text
    assert "goal at default settings" in text
