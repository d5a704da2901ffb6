# SPDX-License-Identifier: Apache-2.0
"""The kube-proxy rule generator (cniprof/lab/kubeproxy.py) is pure: chain names, counts, probabilities, removal."""

from __future__ import annotations

import ipaddress
import re

import pytest

from cniprof.cni.topology import Node, Pod, Topology
from cniprof.errors import CniprofError, UsageError
from cniprof.lab import kubeproxy as kp

CIDR = "10.244.0.0/16"


def svc(n: int = 1, name: str = "svc1", ip: str = "10.96.0.100") -> kp.Service:
    return kp.Service("ns1", name, "p80", ip, 80, "tcp", tuple(f"10.180.0.{i + 1}:80" for i in range(n)))


def lab() -> Topology:
    nodes = tuple(Node(f"node{i}", f"cniprof-node{i}", ()) for i in (1, 2))
    pods = (Pod("pod-a", "node1", "cniprof-node1-pod-a", "10.244.1.2", "veth-pod-a", ()),
            Pod("pod-b", "node1", "cniprof-node1-pod-b", "10.244.1.3", "veth-pod-b", ()),
            Pod("pod-c", "node2", "cniprof-node2-pod-c", "10.244.2.2", "veth-pod-c", ()))
    return Topology("flannel", "vxlan", nodes, pods)


def test_chain_names_are_kube_proxys() -> None:
    """The same names kube-proxy's own tests expect for ns1/svc1:p80 (tcp) and endpoint 10.180.0.1:80."""
    s = svc()
    assert kp.svc_chain(s) == "KUBE-SVC-XPGD46QRK7WJZT7O"
    assert kp.sep_chain(s, "10.180.0.1:80") == "KUBE-SEP-SXIVWICOYRO3J4NJ"
    assert kp.svc_chain(kp.Service("ns1", "svc1", "p80", "x", 80, "udp", ("a:1",))) != kp.svc_chain(s)
    for chain in (kp.svc_chain(s), kp.sep_chain(s, "10.180.0.2:80")):
        assert len(chain) <= 28 and re.fullmatch(r"KUBE-(SVC|SEP)-[A-Z2-7]{16}", chain)  # iptables limit: 28


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7])
def test_probabilities_are_one_over_remaining(n: int) -> None:
    probs = kp.probabilities(n)
    assert probs[-1] is None and len(probs) == n
    assert probs[:-1] == pytest.approx([1 / (n - i) for i in range(n - 1)])
    # each endpoint gets 1/n of the traffic: it wins with p_i after every earlier rule let the packet through
    share, left = [], 1.0
    for p in probs:
        share.append(left * (1.0 if p is None else p))
        left *= 1.0 - (1.0 if p is None else p)
    assert share == pytest.approx([1 / n] * n) and sum(share) == pytest.approx(1.0)


def test_probability_format_and_rules_for_three_endpoints() -> None:
    rules = kp.ruleset([svc(3)], CIDR).text
    chain = kp.svc_chain(svc(3))
    stats = re.findall(rf"^-A {chain} .*?(?:--probability (\S+) )?-j (KUBE-SEP-\S+)$", rules, re.MULTILINE)
    assert [p for p, _ in stats] == ["0.3333333333", "0.5000000000", ""]
    assert [sep for _, sep in stats] == [kp.sep_chain(svc(3), f"10.180.0.{i}:80") for i in (1, 2, 3)]
    assert "-j DNAT --to-destination 10.180.0.3:80" in rules
    with pytest.raises(ValueError):
        kp.probabilities(0)


def test_structure_and_counts() -> None:
    services = [svc(1, f"svc{i}", f"10.96.0.{10 + i}") for i in range(5)] + [svc(2, "two", "10.96.1.1")]
    r = kp.ruleset(services, CIDR)
    lines = r.text.splitlines()
    assert lines[0] == "*nat" and lines.count("COMMIT") == 2 and "*filter" in lines
    nat = lines[: lines.index("COMMIT")]
    # one chain per service and per endpoint, plus the four fixed ones
    assert len(r.chains["nat"]) == 4 + len(services) + (5 + 2) and len(set(r.chains["nat"])) == len(r.chains["nat"])
    assert r.chains["filter"] == ("KUBE-FORWARD",)
    assert all(f":{c} - [0:0]" in lines for c in r.chains["nat"] + r.chains["filter"])
    svc_rules = [ln for ln in nat if ln.startswith("-A KUBE-SERVICES ")]
    assert len(svc_rules) == len(services) + 1 and "--dst-type LOCAL -j KUBE-NODEPORTS" in svc_rules[-1]
    assert '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES' in lines
    assert '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES' in lines
    assert any(ln.startswith("-A POSTROUTING ") and ln.endswith("-j KUBE-POSTROUTING") for ln in lines)
    assert "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000" in lines
    assert any("MASQUERADE" in ln for ln in lines if ln.startswith("-A KUBE-POSTROUTING"))
    assert any(ln.startswith("-A FORWARD ") and ln.endswith("-j KUBE-FORWARD") for ln in lines)
    assert any("0x4000/0x4000 -j ACCEPT" in ln for ln in lines if ln.startswith("-A KUBE-FORWARD"))
    # services outside the cluster CIDR are masqueraded: ! -s CIDR in every KUBE-SVC chain
    assert sum(f"! -s {CIDR} " in ln for ln in lines) == len(services)
    # fixed: 7 nat + 4 filter; a svc chain: 1 mark + 1 jump per endpoint; a sep chain: mark (hairpin) + DNAT
    assert r.rules == sum(ln.startswith("-A ") for ln in lines) == 7 + 4 + (len(services) + 1) + 5 * 4 + (1 + 2 * 3)


def test_ruleset_refuses_bad_services() -> None:
    with pytest.raises(UsageError, match="no endpoint"):
        kp.ruleset([kp.Service("a", "b", "c", "10.96.0.1", 1, "udp", ())], CIDR)
    with pytest.raises(UsageError, match="protocol"):
        kp.ruleset([kp.Service("a", "b", "c", "10.96.0.1", 1, "icmp", ("x:1",))], CIDR)


def test_lab_ruleset_real_service_after_dummies() -> None:
    topo = lab()
    rules, real = kp.lab_ruleset(topo, 1000, [topo.pod("pod-c")], 5300)
    assert real.cluster_ip == "10.96.0.100" and real.endpoints == ("10.244.2.2:5300",)
    svc_lines = [ln for ln in rules.text.splitlines() if ln.startswith("-A KUBE-SERVICES ")]
    assert len(svc_lines) == 1002
    assert f"-d {real.cluster_ip}/32 -p udp" in svc_lines[-2]  # after every dummy, before the nodeports rule
    dummies = kp.dummy_services(1000, ipaddress.IPv4Network(CIDR))
    ips = {d.cluster_ip for d in dummies}
    assert len(ips) == 1000 and real.cluster_ip not in ips
    assert all(ipaddress.IPv4Address(ip) in kp.SERVICE_CIDR for ip in ips)
    endpoints = {d.endpoints[0].split(":")[0] for d in dummies}
    assert len(endpoints) == 1000 and not endpoints & {p.ip for p in topo.pods}
    assert all(ipaddress.IPv4Address(e) in ipaddress.IPv4Network("10.244.128.0/17") for e in endpoints)
    assert rules.rules == 7 + 1002 + 4 + 1001 * 4
    # two target pods: load-balanced with kube-proxy's probabilities
    two, real2 = kp.lab_ruleset(topo, 0, [topo.pod("pod-b"), topo.pod("pod-c")], 53)
    assert len(real2.endpoints) == 2 and "--probability 0.5000000000" in two.text


def test_lab_ruleset_limits() -> None:
    topo = lab()
    with pytest.raises(UsageError):
        kp.dummy_services(-1, ipaddress.IPv4Network(CIDR))
    with pytest.raises(UsageError):
        kp.dummy_services(kp.MAX_DUMMIES + 1, ipaddress.IPv4Network(CIDR))
    with pytest.raises(CniprofError, match="dummy service endpoints"):
        kp.dummy_services(1, ipaddress.IPv4Network(CIDR), avoid=["10.244.200.1"])
    with pytest.raises(UsageError):
        kp.lab_ruleset(topo, 0, [], 80)
    assert kp.default_target(topo).name == "pod-c"  # across nodes from the first pod


SAVED = """# Generated by iptables-save v1.8.9 (nf_tables)
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-FORWARD - [0:0]
-A FORWARD -d 10.244.2.2/32 -p udp -j DROP
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]
:MINE - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -j MINE
-A KUBE-SERVICES -d 10.96.0.100/32 -p udp -j KUBE-SVC-XPGD46QRK7WJZT7O
COMMIT
"""


def test_removal_deletes_only_kube_chains_and_their_jumps() -> None:
    script = kp.removal(SAVED).splitlines()
    assert script == [
        "*filter", ":KUBE-FORWARD - [0:0]",
        '-D FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
        "-X KUBE-FORWARD", "COMMIT",
        "*nat", ":KUBE-SERVICES - [0:0]", ":KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]",
        '-D PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        "-X KUBE-SERVICES", "-X KUBE-SVC-XPGD46QRK7WJZT7O", "COMMIT",
    ]
    assert kp.removal("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n") == ""


def test_removal_of_a_generated_ruleset_covers_every_chain_and_jump() -> None:
    r = kp.ruleset([svc(2), svc(1, "other", "10.96.0.9")], CIDR)
    script = kp.removal(r.text)
    deleted = set(re.findall(r"^-X (\S+)$", script, re.MULTILINE))
    assert deleted == set(r.chains["nat"]) | set(r.chains["filter"])
    assert len(re.findall(r"^-D ", script, re.MULTILINE)) == 4  # PREROUTING, OUTPUT, POSTROUTING, FORWARD


def test_empty_table_detection() -> None:
    empty = """table ip nat {
\tchain PREROUTING {
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t}
}
"""
    assert kp._empty_iptables_table(empty, kp.BUILTIN["nat"])
    rule = empty.replace("policy accept;\n", "policy accept;\n\t\tip daddr 10.0.0.1 counter\n")
    assert not kp._empty_iptables_table(rule, kp.BUILTIN["nat"])
    assert not kp._empty_iptables_table(empty.replace("accept;", "drop;"), kp.BUILTIN["nat"])
    assert not kp._empty_iptables_table(empty.replace("chain PREROUTING", "chain MINE"), kp.BUILTIN["nat"])


def test_nftables_mode_ruleset_and_count() -> None:
    from cniprof.lab import kubeproxy_nft as nft

    topo = lab()
    services = kp.lab_services(topo, 3, [topo.pod("pod-c")], [(5431, "tcp"), (11311, "udp")])
    rules = nft.ruleset(services, CIDR)
    text = rules.text
    assert text.startswith("table ip kube-proxy {") and "ip daddr . meta l4proto . th dport vmap @service-ips" in text
    assert text.count(": goto service-") == 5  # 3 dummies + 2 ports of the real service, one map element each
    assert "10.96.0.100 . udp . 11311 : goto service-" in text and "dnat to 10.244.2.2:11311" in text
    assert "type nat hook prerouting priority dstnat" in text
    # the table listing nft prints back has the same rules as the ruleset counted
    assert nft.count_rules(text) == rules.rules == 9 + 5 + 5 * 2 + 5 * 2  # base chains, map, services, endpoints
