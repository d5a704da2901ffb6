# SPDX-License-Identifier: Apache-2.0
"""Scenario validation: every mistake is one line naming file, line and field; shipped scenarios validate."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cniprof.errors import UsageError
from cniprof.study import scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"

GOOD = """\
version: 1
name: t
models: [host, flannel:vxlan]
paths: [cross-node]
repetitions: 2
duration_s: 3
generators:
  - {name: tcp, tool: iperf3, params: {streams: 2, length: 64KB}}
  - name: rr
    tool: sockperf
    params:
      proto: udp
      msg_size: 64
  - {name: web, tool: wrk, params: {body: 1MB}}
"""


def test_good_scenario():
    s = scenario.loads(GOOD, "t.yaml")
    assert s.models == ("host", "flannel:vxlan") and s.repetitions == 2 and s.duration_s == 3.0
    assert [g.name for g in s.generators] == ["tcp", "rr", "web"]
    assert s.generators[0].params == {"streams": 2, "length": 65536}
    assert s.generators[2].params == {"body": 1 << 20}
    assert [v.name for v in s.variants] == ["baseline"] and s.runs() == 2 * 3 * 2


@pytest.mark.parametrize(("old", "new", "where"), [
    ("msg_size: 64", "msg_size: tiny", "t.yaml:13: generators[1].params.msg_size: must be an integer 14..65000"),
    ("proto: udp", "proto: sctp", "t.yaml:12: generators[1].params.proto: must be tcp or udp, not 'sctp'"),
    ("proto: udp", "protocol: udp", "t.yaml:12: generators[1].params.protocol: unknown parameter for sockperf"),
    ("tool: sockperf", "tool: netperf", "t.yaml:10: generators[1].tool: unknown tool 'netperf'"),
    ("repetitions: 2", "repetitions: many", "t.yaml:5: repetitions: must be an integer 1..100, not 'many'"),
    ("duration_s: 3", "duration_s: true", "t.yaml:6: duration_s: must be a number of seconds"),
    ("models: [host, flannel:vxlan]", "models: [host, weave]", "t.yaml:3: models[1]: unknown CNI 'weave'"),
    ("paths: [cross-node]", "paths: [cross-node, cross-node]", "t.yaml:4: paths: lists a name twice"),
    ("paths: [cross-node]", "paths: [moon]", "t.yaml:4: paths[0]: unknown 'moon'"),
    ("version: 1", "version: 2", "t.yaml:1: version: must be 1, not 2"),
    ("name: t", "name: t\ncolour: red", "t.yaml:3: colour: unknown field"),
    ("streams: 2", "streams: 0", "t.yaml:8: generators[0].params.streams: must be an integer >= 1, not 0"),
    ("name: rr", "name: tcp", "t.yaml:9: generators[1].name: 'tcp' is used by another generator"),
    ("body: 1MB", "body: lots", "t.yaml:14: generators[2].params.body: must be a size in bytes"),
])
def test_errors_name_file_line_and_field(old, new, where):
    assert old in GOOD
    with pytest.raises(UsageError) as err:
        scenario.loads(GOOD.replace(old, new, 1), "t.yaml")
    assert str(err.value).startswith(where), str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_tunings_are_rejected():
    with pytest.raises(UsageError, match=r"tunings.turbo: unknown tuning"):
        scenario.loads(GOOD + "variants: [{name: a, tunings: {turbo: 1}}]\n", "t.yaml")


@pytest.mark.parametrize(("text", "message"), [
    ("", "t.yaml:1: the scenario is empty"),
    ("version: 1\nname: [unclosed\n", "t.yaml:3: not valid YAML"),
    ("- 1\n- 2\n", "t.yaml:1: scenario: must be a mapping"),
    ("version: 1\nversion: 1\n", "t.yaml:2: version: given twice"),
    ("version: 1\nname: x\nmodels: all\n", "t.yaml:1: scenario: missing field 'generators'"),
    ("version: 1\nname: x\nmodels: all\ngenerators: []\n", "t.yaml:4: generators: must be a non-empty list"),
    ("version: 1\nname: !!python/object:os.system x\n", "t.yaml:2: name: cannot read this value"),
])
def test_broken_documents(text, message):
    with pytest.raises(UsageError) as err:
        scenario.loads(text, "t.yaml")
    assert str(err.value).startswith(message), str(err.value)


def test_missing_file_is_one_line(tmp_path):
    with pytest.raises(UsageError, match="cannot read scenario"):
        scenario.load(tmp_path / "nope.yaml")


def test_sizes():
    assert [scenario.parse_size(v) for v in (0, "100KB", "1MB", "1M", "64", "x", True)] == \
        [0, 102400, 1 << 20, 1000000, 64, None, None]


def test_shipped_comparison_validates():
    s = scenario.load(SCENARIOS / "cni-comparison.yaml")
    assert s.models == ("all",)
    assert {g.tool for g in s.generators} == {"ping", "iperf3", "sockperf", "connect_rate", "wrk"}


def test_shipped_iptables_scale():
    s = scenario.load(SCENARIOS / "iptables-scale.yaml")
    assert s.paths == ("pod-to-service",)
    assert [v.tunings["services"] for v in s.variants] == [
        {"count": 0, "mode": "iptables"}, {"count": 1000, "mode": "iptables"}, {"count": 10000, "mode": "iptables"},
        {"count": 10000, "mode": "nftables"}]


def test_shipped_tuning_scenarios():
    assert [v.tunings for v in scenario.load(SCENARIOS / "mtu.yaml").variants] == [{"mtu": 1450}, {"mtu": 8950}]
    off = scenario.load(SCENARIOS / "offloads.yaml").variants[1].tunings["offloads"]
    assert off == {"gro": False, "gso": False, "tso": False, "tx-checksum": False, "devices": ("veth", "vxlan")}
    rps = scenario.load(SCENARIOS / "rps.yaml").variants
    assert rps[2].tunings == {"rps": "0", "xps": "0"} and rps[3].tunings == {"cpu_pinning": "1"}


@pytest.mark.parametrize(("tunings", "message"), [
    ("{mtu: 100}", "tunings.mtu: must be an MTU 1280..9216, not 100"),
    ("{rps: some}", "tunings.rps: must be all, none or a CPU list"),
    ("{offloads: {lro: off}}", "tunings.offloads.lro: unknown offload"),
    ("{offloads: {gro: maybe}}", "tunings.offloads.gro: must be on or off"),
    ("{offloads: {gro: off, devices: [wifi]}}", "tunings.offloads.devices[0]: unknown 'wifi'"),
    ("{txqueuelen: -1}", "tunings.txqueuelen: must be an integer 0..100000"),
    ("{cpu_pinning: all}", "tunings.cpu_pinning: must be a CPU list"),
    ("{sysctl: {net.core.netdev_max_backlog: 5000}}",
     ("tunings.sysctl.net.core.netdev_max_backlog: changes the whole machine (a machine-wide sysctl), not only the "
      "lab: add `host_changes: true`")),
    ("{sysctl: {net.core.wmem_max: 5000}}", "tunings.sysctl.net.core.wmem_max: not supported"),
    ("{rfs: 4096}", "tunings.rfs: changes the whole machine (net.core.rps_sock_flow_entries)"),
    ("{services: -1}", "tunings.services: must be a service count 0..10000"),
    ("{services: {count: 10}, mode: ipvs}", "tunings.mode: unknown tuning"),
    ("{services: {count: 10, mode: ipvs}}", "tunings.services.mode: must be iptables or nftables, not 'ipvs'"),
    ("{services: {mode: nftables}}", "tunings.services: missing field 'count'"),
    ("{services: {count: 10, nodes: 2}}", "tunings.services.nodes: unknown field"),
    ("{services: {count: 10001}}", "tunings.services.count: must be a service count 0..10000"),
    ("{notrack: yes please}", "tunings.notrack: must be true or false"),
    ("{sysctl: {net.ipv4.tcp_rmem: [1, 2]}}", "tunings.sysctl.net.ipv4.tcp_rmem: must be a number or a string"),
    ("{qdisc: 'fq; rm'}", "tunings.qdisc: must be a qdisc kind"),
])
def test_bad_tuning_values(tunings, message):
    with pytest.raises(UsageError, match=re.escape("t.yaml:16: variants[0]." + message)):
        scenario.loads(GOOD + f"variants:\n  - {{name: a, tunings: {tunings}}}\n", "t.yaml")


def _with(extra_top: str = "", tunings: str = "{}", paths: str = "[cross-node]") -> str:
    return GOOD.replace("paths: [cross-node]", f"paths: {paths}").replace("name: t\n", f"name: t\n{extra_top}", 1) \
        + f"variants:\n  - {{name: a, tunings: {tunings}}}\n"


def test_new_tunings_normalized():
    s = scenario.loads(_with("host_changes: true\ncpu: true\n", "{services: 50, notrack: true, rfs: 4096, "
                             "sysctl: {net.core.busy_poll: 50, net.ipv4.tcp_rmem: 4096 87380 6291456}}"), "t.yaml")
    assert s.host_changes and s.cpu
    assert s.variants[0].tunings == {"services": {"count": 50, "mode": "iptables"}, "notrack": True, "rfs": 4096,
                                     "sysctl": {"net.core.busy_poll": "50", "net.ipv4.tcp_rmem": "4096 87380 6291456"}}
    nft = scenario.loads(_with(tunings="{services: {count: 10000, mode: nftables}}"), "t.yaml")
    assert nft.variants[0].tunings["services"] == {"count": 10000, "mode": "nftables"}


@pytest.mark.parametrize(("text", "where"), [
    (_with(tunings="{notrack: true}", paths="[cross-node, pod-to-service]"),
     "t.yaml:16: variants[0].tunings.notrack: cannot be used with the pod-to-service path: untracked packets skip NAT"),
    (_with(paths="[pod-to-service]").replace("name: tcp, tool: iperf3, params: {streams: 2, length: 64KB}",
                                             "name: p, tool: ping"),
     "t.yaml:8: generators[0].tool: ping cannot go to a ClusterIP"),
    (_with("host_changes: maybe\n"), "t.yaml:3: host_changes: must be true or false, not 'maybe'"),
    (_with("cpu: 1\n"), "t.yaml:3: cpu: must be true or false, not 1"),
])
def test_cross_field_errors(text, where):
    with pytest.raises(UsageError) as err:
        scenario.loads(text, "t.yaml")
    assert str(err.value).startswith(where), str(err.value)
