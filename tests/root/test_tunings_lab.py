# SPDX-License-Identifier: Apache-2.0
"""Tunings on the session's flannel/vxlan lab: applied to every lab device, usable (a jumbo ping crosses the
overlay unfragmented), and every setting back to its old value afterwards. ~5 s."""

from __future__ import annotations

import subprocess

import pytest

from cniprof.errors import CniprofError
from cniprof.lab import tunings
from cniprof.netns_exec import run_in

pytestmark = [pytest.mark.root]

TUNED = {"mtu": 8950, "offloads": {"tso": False, "gro": True, "devices": ("veth", "vxlan")}, "txqueuelen": 500,
         "rps": "all", "xps": "all", "qdisc": "pfifo", "sysctl": {"net.ipv4.tcp_rmem": "4096 65536 1048576"}}


def _state(topo) -> dict[tuple[str, str], tuple]:
    """Every lab device's MTU, txqueuelen, offload flags and RPS/XPS masks."""
    out = {}
    for dev in tunings.devices(topo):
        info = tunings.link_info(dev)
        feats = tunings.parse_features(run_in(dev.netns, ["ethtool", "-k", dev.name]))
        masks = run_in(dev.netns, ["sh", "-c", f"cat /sys/class/net/{dev.name}/queues/*/*_cpus 2>/dev/null; true"])
        qdisc = run_in(dev.netns, ["tc", "qdisc", "show", "dev", dev.name])
        out[(dev.netns, dev.name)] = (info["mtu"], info.get("txqlen"), tuple(sorted(feats.items())), masks, qdisc)
    for netns in {*(n.netns for n in topo.nodes), *(p.netns for p in topo.pods)}:
        out[(netns, "sysctl")] = (run_in(netns, ["sysctl", "-n", "net.ipv4.tcp_rmem"]),)
    return out


def _ping(netns: str, ip: str, size: int) -> int:
    return subprocess.run(["ip", "netns", "exec", netns, "ping", "-n", "-c", "1", "-W", "1", "-M", "do", "-s",
                           str(size), ip], capture_output=True, check=False).returncode


def test_tunings_apply_and_revert(lab):
    a, c = lab.pods[0], next(p for p in lab.pods if p.node != lab.pods[0].node)
    before = _state(lab)
    assert _ping(a.netns, c.ip, 8000) != 0  # 1450-byte overlay: too big with DF set
    with tunings.applied(lab, TUNED) as changes:
        assert changes
        node1 = lab.nodes[0]
        assert tunings.link_info(tunings.Dev(node1.netns, "eth0", "underlay"))["mtu"] == 8950
        vxlan = next(d for d in node1.devices if d.role == "vxlan")
        assert tunings.link_info(tunings.Dev(node1.netns, vxlan.name, "vxlan"))["mtu"] == 8900
        pod_eth0 = tunings.Dev(a.netns, "eth0", "pod_veth")
        info = tunings.link_info(pod_eth0)
        assert (info["mtu"], info["txqlen"]) == (8900, 500)
        feats = tunings.parse_features(run_in(a.netns, ["ethtool", "-k", "eth0"]))
        assert feats["tcp-segmentation-offload"][0] is False
        assert "pfifo" in run_in(a.netns, ["tc", "qdisc", "show", "dev", "eth0"])
        assert run_in(a.netns, ["sysctl", "-n", "net.ipv4.tcp_rmem"]).split() == ["4096", "65536", "1048576"]
        assert _ping(a.netns, c.ip, 8000) == 0, "a jumbo ping crosses the tuned overlay"
    assert _state(lab) == before


def test_a_failed_change_reverts_what_was_done(lab, monkeypatch):
    before = _state(lab)
    real = tunings.plan

    def plan_with_a_bad_step(topo, wanted):
        changes = real(topo, wanted)
        bad = tunings.Change(changes[0].dev, "broken", ("ip", "link", "set", "dev", "nosuchdev", "mtu", "1400"), ())
        return [*changes, bad]

    monkeypatch.setattr(tunings, "plan", plan_with_a_bad_step)
    with pytest.raises(CniprofError, match="nosuchdev") as err, tunings.applied(lab, {"mtu": 8950}):
        pass
    assert not isinstance(err.value, tunings.RevertFailed)  # applying failed; reverting worked
    assert _state(lab) == before
