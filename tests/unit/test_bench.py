# SPDX-License-Identifier: Apache-2.0
"""Study statistics, run planning and the run archive, without root (generators and trace are stubbed)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pandas as pd
import pytest

from cniprof.analysis.stats import summarize, t975
from cniprof.run import generators
from cniprof.study import archive as archive_mod
from cniprof.study import runner, scenario
from cniprof.traffic.connect_rate import ConnectRateResult
from cniprof.traffic.ping import PingResult


def test_median_and_ci():
    s = summarize([10.0, 11.0, 12.0])
    assert (s.n, s.median, s.mean) == (3, 11.0, 11.0)
    half = t975(2) * 1.0 / 3**0.5
    assert s.ci_low == pytest.approx(11 - half) and s.ci_high == pytest.approx(11 + half)
    assert s.spread_pct == pytest.approx(100 * half / 11) and s.flagged  # 3 runs: t = 4.3, +-22 %


def test_tight_runs_are_not_flagged_and_single_run_has_no_ci():
    assert not summarize([100.0, 100.5, 99.5, 100.2, 99.8]).flagged
    one = summarize([5.0])
    assert (one.ci_low, one.ci_high, one.flagged) == (None, None, False)
    assert summarize([5.0, float("nan"), 5.0]).n == 2
    with pytest.raises(ValueError):
        summarize([])


def test_ping_metrics_are_order_statistics_of_replies():
    r = PingResult(4, 4, 0.0, 0.1, 0.2, 0.4, 0.05, {1: 0.1, 2: 0.2, 3: 0.15, 4: 0.4})
    m = generators.metrics("ping", r)
    assert m["latency_p50_us"] == pytest.approx(200.0) and m["latency_p99_us"] == pytest.approx(400.0)
    assert m["latency_avg_us"] == pytest.approx(200.0) and m["loss_pct"] == 0.0


def test_every_tool_has_a_primary_metric_it_reports():
    r = ConnectRateResult(10, 0, 1.0, 10.0, 30.0, 50.0)
    assert generators.PRIMARY["connect_rate"][0] in generators.metrics("connect_rate", r)
    assert set(generators.PRIMARY) == set(scenario.TOOLS)


def test_generator_argv_from_spec():
    a = SimpleNamespace(netns="ns-a", ip="10.0.0.1")
    b = SimpleNamespace(netns="ns-b", ip="10.0.0.2")
    gen = generators.make(scenario.GeneratorSpec("u", "iperf3", {"udp": True, "bitrate": "1G", "length": 1400}),
                          a, b, 2.5)
    argv = gen.client_argv()
    assert argv[:3] == ["iperf3", "-c", "10.0.0.2"] and "-u" in argv and argv[-2:] == ["-l", "1400"]
    ping = generators.make(scenario.GeneratorSpec("p", "ping", {"interval_s": 0.05}), a, b, 2)
    assert ping.count == 40


def _scen(text_models: str = "[host, flannel:vxlan, bridge]") -> scenario.Scenario:
    return scenario.loads(f"""version: 1
name: t
models: {text_models}
paths: [cross-node, same-node]
repetitions: 2
duration_s: 1
generators: [{{name: p, tool: ping}}, {{name: c, tool: connect_rate}}]
""", "t.yaml")


def test_plan_is_model_major_and_skips_missing_paths():
    scen = _scen()
    models, skipped = runner.resolve_models(scen)
    runs, skipped_paths = runner.plan(scen, models)
    assert [m.spec for m in models] == ["host:network", "flannel:vxlan", "bridge:bridge"] and not skipped
    assert {(s["model"], s["path"]) for s in skipped_paths} == {("host:network", "same-node"),
                                                                 ("bridge:bridge", "cross-node")}
    assert len(runs) == (1 + 2 + 1) * 2 * 2
    assert runs[0].run_id == "001-host_network-cross-node-baseline-p-r1"
    assert [r.index for r in runs] == list(range(1, len(runs) + 1))


def test_all_models_skips_what_the_kernel_lacks(monkeypatch):
    from cniprof.errors import EnvironmentProblem
    from cniprof.lab import kernel

    def require(spec, requires):
        if spec == "flannel:vxlan":
            raise EnvironmentProblem("no VXLAN")

    monkeypatch.setattr(kernel, "require", require)
    models, skipped = runner.resolve_models(_scen("all"))
    assert "flannel:vxlan" not in [m.spec for m in models] and skipped == [{"model": "flannel:vxlan",
                                                                              "reason": "no VXLAN"}]


def test_run_scenario_records_results_and_failures(monkeypatch, tmp_path):
    """The whole runner loop with the lab, the trace and the generators stubbed out."""
    from contextlib import contextmanager

    from cniprof.errors import CniprofError

    @contextmanager
    def fake_lab(model):
        yield SimpleNamespace(model=model)

    calls = []

    def fake_execute(run, topo, scen, archive, setup_s, setup=None, on_snapshot=None):
        calls.append(run.run_id)
        if run.generator.tool == "connect_rate" and run.repetition == 2:
            raise CniprofError("connect rate: no connection succeeded: Connection refused")
        value = 100.0 + run.repetition if run.model.spec == "host:network" else 50.0
        archive.add(run.record(), {"latency_p50_us": value}, "latency_p50_us", False, pd.DataFrame(
            {"direction": ["a→b"], "hop": ["x"], "mean_us": [1.0], "expected": [True], "in_e2e": [True]}))
        return {}

    monkeypatch.setattr(runner, "model_lab", fake_lab)
    monkeypatch.setattr(runner, "execute", fake_execute)
    monkeypatch.setattr(archive_mod, "environment", lambda: {"kernel": "test"})
    seen = []
    arch = runner.run_scenario(_scen("[host, flannel:vxlan]"), tmp_path / "run", "text",
                               lambda run, done, total: seen.append((done, total)))
    assert len(calls) == 12 and seen[-1] == (12, 12)
    meta = json.loads((tmp_path / "run" / "metadata.json").read_text())
    assert meta["status"] == "complete-with-failures" and len(meta["failed"]) == 3
    assert meta["scenario"]["planned_runs"] == 12
    results = pd.read_csv(tmp_path / "run" / "results.csv")
    assert len(results) == 9 and set(results["primary"]) == {True}
    stats = pd.read_parquet(tmp_path / "run" / "stats.parquet")
    host = stats[(stats.model == "host:network") & (stats.generator == "p")].iloc[0]
    assert (host["n"], host["median"]) == (2, 101.5)
    assert len(pd.read_csv(tmp_path / "run" / "hops.csv")) == 9
    assert arch.meta["runs"][0]["run_id"].startswith("001-host_network")


def test_a_tuning_that_cannot_be_reverted_stops_the_study(monkeypatch, tmp_path):
    from contextlib import contextmanager

    from cniprof.lab import tunings

    @contextmanager
    def fake_lab(model):
        yield None

    def fake_execute(run, topo, scen, archive, setup_s, setup=None, on_snapshot=None):
        raise tunings.RevertFailed("could not revert 1 tuning changes")

    monkeypatch.setattr(runner, "model_lab", fake_lab)
    monkeypatch.setattr(runner, "execute", fake_execute)
    monkeypatch.setattr(archive_mod, "environment", lambda: {"kernel": "test"})
    with pytest.raises(tunings.RevertFailed):
        runner.run_scenario(_scen("[host]"), tmp_path / "run", "text")
    assert json.loads((tmp_path / "run" / "metadata.json").read_text())["status"] == "interrupted"


def test_run_check_needs_no_root(capsys):
    from pathlib import Path

    from cniprof.cli.main import main

    scenarios = Path(__file__).resolve().parents[2] / "scenarios"
    assert main(["run", str(scenarios / "cni-comparison.yaml"), "--check", "--repetitions", "1"]) == 0
    assert "cni-comparison:" in capsys.readouterr().err
    assert main(["run", str(scenarios / "iptables-scale.yaml"), "--check"]) == 0


def test_plan_service_path_and_services_tuning_skips():
    from cniprof.cni import registry

    scen = scenario.loads("""version: 1
name: t
models: [flannel:vxlan, cilium:vxlan, bridge]
paths: [pod-to-service, same-node]
repetitions: 1
duration_s: 1
generators: [{name: c, tool: connect_rate}, {name: u, tool: sockperf, params: {proto: udp}}]
variants: [{name: plain}, {name: many, tunings: {services: {count: 100, mode: nftables}}}]
""", "t.yaml")
    runs, skipped = runner.plan(scen, [registry.parse(m) for m in scen.models])
    reasons = {(s["model"], s["path"], s.get("variant")): s["reason"] for s in skipped}
    assert "kube-proxy replacement" in reasons[("cilium:vxlan", "pod-to-service", None)]
    assert "tuning services" in reasons[("cilium:vxlan", "same-node", "many")]
    assert "no cross-node path, which pod-to-service follows" in reasons[("bridge:bridge", "pod-to-service", None)]
    assert {(r.model_name, r.path, r.variant.name) for r in runs} == {
        ("flannel:vxlan", "pod-to-service", "plain"), ("flannel:vxlan", "pod-to-service", "many"),
        ("flannel:vxlan", "same-node", "plain"), ("flannel:vxlan", "same-node", "many"),
        ("cilium:vxlan", "same-node", "plain"), ("bridge:bridge", "same-node", "plain"),
        ("bridge:bridge", "same-node", "many")}
    assert runner.service_ports(scen) == [(5431, "tcp"), (11311, "udp")]
    assert runner.host_values({"rfs": 4096, "sysctl": {"net.core.busy_poll": "50", "net.ipv4.tcp_rmem": "1 2 3"}}) == {
        "net.core.busy_poll": "50", "net.core.rps_sock_flow_entries": "4096"}
