# SPDX-License-Identifier: Apache-2.0
"""nodestate parsing and windowing on canned /proc and tool output (the live capture is in tests/root)."""

from __future__ import annotations

from cniprof.node import state

SNMP = """Ip: Forwarding DefaultTTL InReceives FragOKs FragCreates
Ip: 1 64 100 2 4
Tcp: RtoAlgorithm OutSegs RetransSegs
Tcp: 1 1000 7
"""
SOFTIRQS = """                    CPU0       CPU1
          HI:          1          0
      NET_TX:         10         20
      NET_RX:        500        100
"""
SOFTNET = """00000010 00000001 00000002 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000
00000020 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000001
"""
STAT = """cpu  10 0 10 80 0 0 0 0 0 0
cpu0 5 0 5 40 0 0 0 0 0 0
cpu1 5 0 5 40 10 0 0 0 0 0
"""


def test_snmp_softirqs_softnet_stat():
    snmp = state.parse_snmp(SNMP)
    assert snmp["IpFragCreates"] == 4 and snmp["TcpRetransSegs"] == 7 and snmp["TcpOutSegs"] == 1000
    soft = state.parse_softirqs(SOFTIRQS)
    assert soft == {0: {"net_tx": 10, "net_rx": 500}, 1: {"net_tx": 20, "net_rx": 100}}
    net = state.parse_softnet(SOFTNET)
    assert net[0] == {"processed": 16, "dropped": 1, "time_squeeze": 2} and net[1]["processed"] == 32
    stat = state.parse_stat(STAT)
    assert stat[0] == {"busy": 10, "idle": 40} and stat[1] == {"busy": 10, "idle": 50}


NS_OUT = """@@links
[{"ifname":"eth0","mtu":1400,"txqlen":1000,"stats64":{"rx":{"dropped":3,"packets":10},"tx":{"dropped":0}}}]
@@qdisc
[{"kind":"pfifo_fast","dev":"eth0","root":true,"backlog":1500,"qlen":1,"bytes":9,"packets":5,"drops":2,
"overlimits":0,"requeues":1}]
@@snmp
Ip: FragCreates
Ip: 9
@@netstat
TcpExt: TCPTimeouts
TcpExt: 1
@@conntrack
42
@@ethtool eth0
Features for eth0:
tx-checksumming: off
generic-segmentation-offload: off [fixed]
tcp-segmentation-offload: on
@@queues eth0
rx-0 3 0 -
tx-0 - - 0
@@iptables
-A KUBE-SERVICES -d 10.96.0.1/32 -j KUBE-SVC-X
-A FORWARD -j ACCEPT
@@nft
@@nfttable ip kube-proxy
{"nftables": [{"rule": {"table": "kube-proxy", "chain": "services"}}, {"chain": {"name": "x"}}]}
"""


def test_parse_namespace_reads_every_section():
    ns = state.parse_namespace(NS_OUT, {"eth0": "underlay", "gone0": "host_veth"})
    eth0, gone = ns["devices"]
    assert eth0["mtu"] == 1400 and eth0["txqueuelen"] == 1000
    assert eth0["features"]["tx-checksum"] is False and eth0["features"]["tso"] is True
    assert eth0["fixed"]["gso"] is True and eth0["features"]["gro"] is None  # not listed: unknown, not off
    assert eth0["rps_cpus"] == [[0, 1]] and eth0["xps_cpus"] == [[]] and eth0["rps_flow_cnt"] == [0]
    assert eth0["qdisc"]["kind"] == "pfifo_fast" and eth0["qdisc"]["drops"] == 2
    assert eth0["stats"]["rx_dropped"] == 3
    assert gone["mtu"] is None and gone["features"] is None  # a device the namespace lacks: recorded, no crash
    assert ns["snmp"] == {"IpFragCreates": 9, "TcpExtTCPTimeouts": 1} and ns["conntrack_count"] == 42
    assert ns["netfilter"] == {"iptables_rules": 2, "iptables_kube_rules": 1, "nft_rules": 1, "nft_kube_rules": 1,
                               "kube_rules": 2}


def test_missing_tools_are_unavailable_not_errors():
    ns = state.parse_namespace("@@links\nnot json\n@@conntrack\nunavailable\n@@iptables\n@@nft\nunavailable\n",
                                   {"eth0": "underlay"})
    assert {"ip -j -s link", "nf_conntrack_count", "nft"} <= set(ns["unavailable"])
    assert ns["conntrack_count"] is None and ns["devices"][0]["mtu"] is None


def test_window_keeps_end_config_and_counter_deltas():
    start = {"monotonic": 10.0, "read_s": 0.1, "unavailable": [],
             "namespaces": [{"netns": "n1", "kind": "node", "node": "node1", "pod": None,
                             "snmp": {"IpFragCreates": 5, "TcpRetransSegs": 1},
                             "devices": [{"name": "eth0", "role": "underlay", "mtu": 1500,
                                          "qdisc": {"kind": "noqueue", "drops": 1, "backlog": 0},
                                          "stats": {"rx_dropped": 1}}]}],
             "cpus": {0: {"net_rx": 100, "busy": 10, "idle": 90}}}
    end = {"monotonic": 12.0, "read_s": 0.2, "unavailable": [],
           "namespaces": [{"netns": "n1", "kind": "node", "node": "node1", "pod": None, "conntrack_count": 3,
                           "netfilter": {"kube_rules": 0}, "snmp": {"IpFragCreates": 9, "TcpRetransSegs": 1},
                           "devices": [{"name": "eth0", "role": "underlay", "mtu": 1400,
                                        "qdisc": {"kind": "noqueue", "drops": 4, "backlog": 0},
                                        "stats": {"rx_dropped": 1}}]}],
           "cpus": {0: {"net_rx": 400, "busy": 40, "idle": 110}}}
    w = state.window(start, end)
    ns = w["namespaces"][0]
    assert w["window_s"] == 2.0 and ns["devices"][0]["mtu"] == 1400
    assert ns["devices"][0]["qdisc"]["drops"] == 3 and ns["devices"][0]["stats"]["rx_dropped"] == 0
    assert ns["snmp"]["IpFragCreates"] == 4 and ns["snmp"]["TcpRetransSegs"] == 0
    assert ns["snmp"]["IcmpMsgOutType3"] is None  # a key neither reading had: unknown, not 0
    assert w["cpus"] == [{"cpu": 0, "net_rx": 300, "net_tx": None, "processed": None, "dropped": None,
                          "time_squeeze": None, "busy": 30, "idle": 20, "busy_pct": 60.0, "idle_pct": 40.0}]
