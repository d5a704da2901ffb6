# SPDX-License-Identifier: Apache-2.0
"""Tuning plans: which device settings a variant changes, in which order, and how each is reverted."""

from __future__ import annotations

import os

from cniprof.lab import tunings
from cniprof.lab.tunings import Dev

NODE = [Dev("n1", "eth0", "underlay"), Dev("n1", "flannel.1", "vxlan"), Dev("n1", "cni0", "bridge"),
        Dev("n1", "veth-pod-a", "host_veth")]
POD = [Dev("p1", "eth0", "pod_veth")]
INFOS = {Dev("n1", "eth0", "underlay"): {"mtu": 1500, "txqlen": 1000}, Dev("n1", "flannel.1", "vxlan"): {"mtu": 1450},
         Dev("n1", "cni0", "bridge"): {"mtu": 1450}, Dev("n1", "veth-pod-a", "host_veth"): {"mtu": 1450},
         Dev("p1", "eth0", "pod_veth"): {"mtu": 1450, "txqlen": 1000}}

ETHTOOL_K = """Features for eth0:
rx-checksumming: on
tx-checksumming: on
tcp-segmentation-offload: on
generic-segmentation-offload: on
generic-receive-offload: off
large-receive-offload: off [fixed]
"""


def test_jumbo_mtu_grows_outer_devices_first_and_subtracts_vxlan_overhead():
    changes = tunings.plan_mtu(NODE + POD, INFOS, 8950)
    assert [(c.dev.name, c.apply[-1]) for c in changes] == [
        ("eth0", "8950"), ("flannel.1", "8900"), ("cni0", "8900"), ("veth-pod-a", "8900"), ("eth0", "8900")]
    assert changes[0].revert == ("ip", "link", "set", "dev", "eth0", "mtu", "1500")


def test_smaller_mtu_shrinks_inner_devices_first():
    changes = tunings.plan_mtu(NODE + POD, INFOS, 1450)
    assert [c.dev.role for c in changes] == ["pod_veth", "host_veth", "bridge", "vxlan", "underlay"]
    assert [c.apply[-1] for c in changes] == ["1400"] * 4 + ["1450"]


def test_host_model_has_no_overhead():
    only = [Dev("n1", "eth0", "underlay")]
    assert tunings.plan_mtu(only, {only[0]: {"mtu": 1500}}, 1500) == []


def test_parse_features():
    f = tunings.parse_features(ETHTOOL_K)
    assert f["generic-receive-offload"] == (False, False) and f["large-receive-offload"] == (False, True)
    assert "Features for eth0" not in f


def test_offloads_change_only_what_differs_on_chosen_roles():
    feats = {d: tunings.parse_features(ETHTOOL_K) for d in NODE + POD}
    changes = tunings.plan_offloads(NODE + POD, feats, {"gro": False, "tso": False, "devices": ("veth",)})
    assert {c.dev.name for c in changes} == {"veth-pod-a", "eth0"} and all(c.dev.role != "underlay" for c in changes)
    assert {c.apply[3:] for c in changes} == {("tso", "off")}  # gro is already off
    assert changes[0].revert[3:] == ("tso", "on")
    default = tunings.plan_offloads(NODE + POD, feats, {"gro": True})
    assert {c.dev.role for c in default} == {"vxlan", "host_veth", "pod_veth"}


def test_txqueuelen():
    devs = [Dev("n1", "eth0", "underlay"), Dev("p1", "eth0", "pod_veth")]
    infos = {devs[0]: {"txqlen": 1000}, devs[1]: {"txqlen": 500}}
    changes = tunings.plan_txqueuelen(devs, infos, 500)
    assert len(changes) == 1 and changes[0].revert[-1] == "1000"


def test_cpu_mask():
    cpus = sorted(os.sched_getaffinity(0))
    assert tunings.cpu_mask("none") == "0"
    assert tunings.cpu_mask("0") == "1" and tunings.cpu_mask("0,2") == "5"
    assert tunings.cpu_mask("all") == format(sum(1 << c for c in cpus), "x")


def test_nothing_to_apply_is_a_no_op():
    with tunings.applied(None, {}) as changes:  # type: ignore[arg-type]
        assert changes == []


def test_pinned_children_inherit_and_the_runner_gets_its_cpus_back():
    import subprocess

    before = os.sched_getaffinity(0)
    cpu = min(before)
    with tunings.pinned(str(cpu)):
        child = subprocess.Popen(["sleep", "5"])
    try:
        assert os.sched_getaffinity(child.pid) == {cpu}
        assert os.sched_getaffinity(0) == before
    finally:
        child.kill()
        child.wait()
    with tunings.pinned(None):
        assert os.sched_getaffinity(0) == before


def test_pinning_to_a_missing_cpu_is_one_line():
    import pytest

    from cniprof.errors import CniprofError

    with pytest.raises(CniprofError, match="cpu_pinning 1000: cannot run on CPUs"), tunings.pinned("1000"):
        pass


def test_process_tunings_change_no_device():
    assert tunings.plan(None, {"cpu_pinning": "0"}) == []  # type: ignore[arg-type]


def test_sysctl_plan_per_namespace_with_old_values(monkeypatch):
    from types import SimpleNamespace

    topo = SimpleNamespace(nodes=[SimpleNamespace(netns="n1")], pods=[SimpleNamespace(netns="p1"),
                                                                       SimpleNamespace(netns="p2")])
    current = {"n1": "4096\t131072\t6291456\n", "p1": "4096 65536 1048576\n", "p2": "4096\t131072\t6291456\n"}
    monkeypatch.setattr(tunings, "run_in", lambda netns, argv, **kw: current[netns])
    changes = tunings.plan_sysctl(topo, {"net.ipv4.tcp_rmem": "4096 65536 1048576"})
    assert [c.dev.netns for c in changes] == ["n1", "p2"]  # p1 already has it
    assert changes[0].apply == ("sysctl", "-q", "-w", "net.ipv4.tcp_rmem=4096 65536 1048576")
    assert changes[0].revert == ("sysctl", "-q", "-w", "net.ipv4.tcp_rmem=4096 131072 6291456")


def test_qdisc_plan_refuses_to_replace_a_configured_qdisc(monkeypatch):
    import pytest

    from cniprof.errors import CniprofError

    dev = [Dev("n1", "eth0", "underlay")]
    monkeypatch.setattr(tunings, "run_in", lambda netns, argv, **kw: '[{"kind":"noqueue","root":true}]')
    (change,) = tunings.plan_qdisc(dev, "pfifo")
    assert change.revert == ("tc", "qdisc", "del", "dev", "eth0", "root")
    monkeypatch.setattr(tunings, "run_in", lambda netns, argv, **kw: '[{"kind":"tbf","root":true}]')
    with pytest.raises(CniprofError, match="already has a tbf qdisc"):
        tunings.plan_qdisc(dev, "pfifo")


def test_tunnel_above_a_lowered_underlay_is_restored_by_lifting_the_underlay_for_the_moment():
    # the mtu-mismatch injection: eth0 lowered to 1450 under a 1450 flannel.1 (which `ip link set` could not set)
    infos = {**INFOS, Dev("n1", "eth0", "underlay"): {"mtu": 1450}}
    changes = {c.dev.name: c for c in tunings.plan_mtu(NODE, infos, 1450)}
    assert "eth0" not in changes  # the underlay already has the wanted MTU
    revert = changes["flannel.1"].revert
    assert revert[:2] == ("sh", "-c")
    assert "ip link set dev eth0 mtu 1500 && ip link set dev flannel.1 mtu 1450" in revert[2]
    assert revert[2].endswith("ip link set dev eth0 mtu $u && exit $r")
    assert changes["cni0"].revert == ("ip", "link", "set", "dev", "cni0", "mtu", "1450")  # no lower device limit
