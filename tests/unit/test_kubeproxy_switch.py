# SPDX-License-Identifier: Apache-2.0
"""The iptables -> nftables mode switch that `tune --try kube-proxy-nftables` applies per tuned run: per node,
iptables' two entry jumps out and nftables' two in, each with the exact revert."""

from __future__ import annotations

from cniprof.cni.topology import Node, Topology
from cniprof.lab import tunings


def test_switch_takes_iptables_entry_rules_out_and_puts_nftables_ones_in_on_every_node():
    topo = Topology("flannel", "vxlan", (Node("node1", "ns1", ()), Node("node2", "ns2", ())), ())
    changes = tunings.plan_kube_proxy_nftables(topo)
    assert [c.dev.netns for c in changes] == ["ns1"] * 4 + ["ns2"] * 4
    ipt = [c for c in changes if c.apply[0] == "iptables"]
    nft = [c for c in changes if c.apply[0] == "nft"]
    assert {c.apply[4] for c in ipt} == {"PREROUTING", "OUTPUT"}
    for c in ipt:  # delete the jump; the revert appends the identical rule again
        assert c.apply[3] == "-D" and c.revert[3] == "-A" and c.apply[4:] == c.revert[4:]
        assert c.apply[-2:] == ("-j", "KUBE-SERVICES") and "kubernetes service portals" in c.apply
    for c in nft:  # add `jump services` to the staged base chain; the revert empties it again
        assert c.apply[:5] == ("nft", "add", "rule", "ip", "kube-proxy") and c.apply[-2:] == ("jump", "services")
        assert c.revert == ("nft", "flush", "chain", "ip", "kube-proxy", c.apply[5])
    assert {c.apply[5] for c in nft} == {"nat-prerouting", "nat-output"}
