# SPDX-License-Identifier: Apache-2.0
"""cniprof tune's pure logic: ABBA order, gains, the t CI on log-ratios, verdicts, findings.json reading, the
tune table and graph rendered from a recorded tune.csv, and the one-line refusals of names."""

from __future__ import annotations

import json
import math
import statistics

import pandas as pd
import pytest

from cniprof.analysis import paired
from cniprof.analysis.stats import t975
from cniprof.cli.tune import advised
from cniprof.cni.topology import Device, Node, Topology
from cniprof.errors import UsageError
from cniprof.report import tune as tune_report
from cniprof.run import inject
from cniprof.tune import tunes


def test_order_alternates_so_consecutive_pairs_read_abba():
    sequence = [arm for p in range(4) for arm in paired.order(p)]
    assert sequence == ["baseline", "tuned", "tuned", "baseline"] * 2


def test_gain_is_above_one_when_the_tuning_is_better_in_either_direction():
    assert paired.gain(10.0, 12.0, higher_is_better=True) == pytest.approx(1.2)
    assert paired.gain(100.0, 80.0, higher_is_better=False) == pytest.approx(1.25)  # latency went down


def test_effect_ci_is_the_t_interval_of_the_mean_log_gain():
    base, tuned = [10.0, 11.0, 9.0, 10.0, 10.5], [12.0, 12.5, 11.0, 12.2, 12.9]
    e = paired.effect(base, tuned, True)
    logs = [math.log(t / b) for b, t in zip(base, tuned)]
    half = t975(4) * statistics.stdev(logs) / math.sqrt(5)
    assert e.ci_low == pytest.approx(math.exp(statistics.fmean(logs) - half))
    assert e.ci_high == pytest.approx(math.exp(statistics.fmean(logs) + half))
    assert e.gain_median == pytest.approx(statistics.median(t / b for b, t in zip(base, tuned)))
    assert (e.baseline_median, e.tuned_median, e.pairs, e.verdict) == (10.0, 12.2, 5, paired.HELPS)


def test_effect_verdicts():
    assert paired.effect([10, 10, 10], [8, 8.2, 7.9], True).verdict == paired.HURTS
    assert paired.effect([10, 10, 10], [9, 11, 10.1], True).verdict == paired.NO_EFFECT
    # lower is better: a smaller latency helps
    assert paired.effect([100, 101, 99], [80, 82, 79], False).verdict == paired.HELPS


def test_one_pair_has_no_interval_and_no_verdict():
    e = paired.effect([10.0], [20.0], True)
    assert (e.pairs, e.gain_median, e.ci_low, e.verdict) == (1, 2.0, None, paired.NO_EFFECT)


def test_failed_runs_drop_their_pair():
    e = paired.effect([10.0, None, 10.0, 0.0], [12.0, 12.0, 12.5, 12.0], True)
    assert (e.pairs, e.dropped) == (2, 2)
    assert paired.effect([None], [1.0], True) == paired.Effect(0, 1, None, None, None, None, None, paired.NO_EFFECT)


def test_identical_gains_give_a_zero_width_interval():
    e = paired.effect([10.0, 20.0], [15.0, 30.0], True)
    assert e.ci_low == pytest.approx(1.5) and e.ci_high == pytest.approx(1.5) and e.verdict == paired.HELPS


def test_verdict_boundaries():
    assert paired.verdict(1.0, 1.2) == paired.NO_EFFECT  # touching 1 is not "entirely above"
    assert paired.verdict(0.8, 1.0) == paired.NO_EFFECT
    assert paired.verdict(None, None) == paired.NO_EFFECT


def test_advised_reads_only_tune_names_and_tolerates_missing_fields(tmp_path):
    doc = [{"advice": [{"tune": "offloads-on"}, {"text": "no tune here"}, {"tune": "mtu-match"}]},
           {"title": "no advice at all"}, {"advice": "not a list"},
           {"advice": [{"tune": "offloads-on"}, {"tune": "rps-spread", "risk": "low"}]}]
    (tmp_path / "findings.json").write_text(json.dumps(doc))
    assert advised(tmp_path) == ["offloads-on", "mtu-match", "rps-spread"]
    (tmp_path / "findings.json").write_text(json.dumps({"findings": doc[:1]}))
    assert advised(tmp_path) == ["offloads-on", "mtu-match"]


def test_advised_without_findings_is_one_line(tmp_path):
    with pytest.raises(UsageError, match="no findings.json"):
        advised(tmp_path)
    (tmp_path / "findings.json").write_text("{not json")
    with pytest.raises(UsageError, match="unreadable"):
        advised(tmp_path)


def test_catalog_refuses_unknown_and_not_yet_names():
    with pytest.raises(UsageError, match="unknown tuning 'bogus'; available: offloads-on"):
        tunes.get("bogus")
    with pytest.raises(UsageError, match="host_changes: true"):
        tunes.get("netdev-backlog")
    assert tunes.get("kube-proxy-nftables").path == "pod-to-service"
    assert tunes.get("OFFLOADS-ON").name == "offloads-on"
    assert tunes.TUNES["notrack"].generator == "connect"
    with pytest.raises(UsageError, match="unknown --generator"):
        tunes.generator(tunes.get("rps-spread"), "netperf")


def _topo(*roles: str) -> Topology:
    devices = tuple(Device(f"d{i}", r, i + 1, "ns1") for i, r in enumerate(roles))
    return Topology("x", "y", (Node("node1", "ns1", devices),), ())


def test_injection_names_and_refusals():
    assert inject.check_name("Services=010000") == "services=10000"
    with pytest.raises(UsageError, match="services=N needs N in 0..") as e:
        inject.check_name("services=lots")
    assert "'lots'" in str(e.value)
    with pytest.raises(UsageError, match="unknown injection 'mtu'"):
        inject.check_name("mtu")
    no_tunnel = _topo("underlay", "bridge", "host_veth")
    assert "no tunnel device" in inject.INJECTIONS["offloads-off"].refusal(no_tunnel)
    assert "no tunnel device" in inject.INJECTIONS["mtu-mismatch"].refusal(no_tunnel)
    assert inject.INJECTIONS["offloads-off"].refusal(_topo("underlay", "vxlan")) is None
    assert "no veth or underlay" in inject.INJECTIONS["softirq-one-cpu"].refusal(_topo("macvlan"))
    pinned = Topology("x", "y", (), (), injections=("offloads-off", "softirq-one-cpu"))
    assert inject.pinned_cpus(pinned) == "0" and inject.pinned_cpus(_topo("vxlan")) is None
    assert Topology.from_json(pinned.to_json()).injections == pinned.injections


def _recorded_runs() -> pd.DataFrame:
    rows = []
    base = [10.1e9, 9.8e9, 10.0e9]
    tuned = [12.0e9, 12.4e9, 11.9e9]
    for p in range(3):
        for position, arm in enumerate(paired.order(p)):
            value = (tuned if arm == "tuned" else base)[p]
            rows.append({"tuning": "offloads-on", "generator": "iperf3", "tool": "iperf3",
                         "metric": "throughput_bps", "higher_is_better": True, "pair": p + 1, "arm": arm,
                         "position": position, "throughput_bps": value, "retransmits": 3})
    rows.append({**rows[0], "tuning": "rps-spread", "throughput_bps": 5e9})  # one baseline, no tuned: no pair
    return pd.DataFrame(rows)


def test_report_recomputes_effects_from_tune_csv_and_draws_the_graph(tmp_path):
    rows, files = tune_report.write(tmp_path, _recorded_runs(), {"cni": "flannel:vxlan"})
    assert [r["tuning"] for r in rows] == ["offloads-on", "rps-spread"]
    on = rows[0]
    assert on["verdict"] == paired.HELPS and on["pairs"] == 3
    assert on["baseline_median"] == 10.0e9 and on["tuned_median"] == 12.0e9
    assert rows[1]["pairs"] == 0 and rows[1]["verdict"] == paired.NO_EFFECT
    saved = json.loads((tmp_path / "tune.json").read_text())
    assert saved["effects"][0]["gain_median"] == pytest.approx(on["gain_median"]) and "log" in saved["ci_method"]
    again = tune_report.effects(tune_report.load(tmp_path))
    assert again == rows
    assert {f.name for f in files} >= {"tune.csv", "tune.json", "tune.png", "tune.svg"}
    assert all(f.stat().st_size > 0 for f in files)
    assert tune_report.load(tmp_path / "nowhere") is None
