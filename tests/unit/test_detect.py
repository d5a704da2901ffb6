# SPDX-License-Identifier: Apache-2.0
"""CNI detection without root: real configuration files in a temporary node root, and device lists as netlink
would report them (the namespace side is tested for real in tests/root/test_detect_live.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cniprof.node import detect, livenode
from cniprof.node.livenode import Link

FLANNEL_CONFLIST = {
    "name": "cbr0", "cniVersion": "0.3.1",
    "plugins": [{"type": "flannel", "delegate": {"hairpinMode": True, "isDefaultGateway": True}},
                {"type": "portmap", "capabilities": {"portMappings": True}}],
}
CALICO_CONFLIST = {
    "name": "k8s-pod-network", "cniVersion": "0.3.1",
    "plugins": [{"type": "calico", "datastore_type": "kubernetes", "ipam": {"type": "calico-ipam"}},
                {"type": "portmap", "snat": True, "capabilities": {"portMappings": True}}],
}
SUBNET_ENV = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"


def link(name: str, index: int, kind: str = "", ipv4: tuple[str, ...] = (), peer_netnsid: int | None = None,
         peer_index: int | None = None, vxlan_link: int | None = None) -> Link:
    return Link(name, index, kind, peer_index, peer_netnsid, None, True, ipv4, vxlan_link)


LO = link("lo", 1, ipv4=("127.0.0.1/8",))
ETH0 = link("eth0", 2, "veth", ("192.168.77.1/24",), peer_netnsid=0, peer_index=2)  # the lab's underlay veth
CNI0 = link("cni0", 3, "bridge", ("10.244.1.1/24",))
FLANNEL1 = link("flannel.1", 4, "vxlan", ("10.244.1.0/32",), vxlan_link=2)
POD_A = link("veth-pod-a", 5, "veth", peer_netnsid=1, peer_index=2)
CALI = link("cali5e1c4d6c68c", 3, "veth", peer_netnsid=1, peer_index=2)
VXLAN_CALICO = link("vxlan.calico", 4, "vxlan", ("10.244.1.0/32",), vxlan_link=2)
TUNL0 = link("tunl0", 5, "ipip")


def node_root(tmp_path: Path, confs: dict[str, object] | None = None, subnet_env: str | None = None,
              net_conf: dict | None = None) -> Path:
    """A node root directory with real files where kubelet and flanneld keep them."""
    conf_dir = tmp_path / "etc/cni/net.d"
    conf_dir.mkdir(parents=True)
    for name, content in (confs or {}).items():
        (conf_dir / name).write_text(content if isinstance(content, str) else json.dumps(content))
    if subnet_env is not None:
        (tmp_path / "run/flannel").mkdir(parents=True)
        (tmp_path / "run/flannel/subnet.env").write_text(subnet_env)
    if net_conf is not None:
        (tmp_path / "etc/kube-flannel").mkdir(parents=True)
        (tmp_path / "etc/kube-flannel/net-conf.json").write_text(json.dumps(net_conf))
    return tmp_path


def test_flannel_vxlan_from_files_and_devices(tmp_path: Path) -> None:
    root = node_root(tmp_path, {"10-flannel.conflist": FLANNEL_CONFLIST}, SUBNET_ENV)
    d = detect.detect(root, links=[LO, ETH0, CNI0, FLANNEL1, POD_A])
    assert (d.cni, d.mode, d.confidence) == ("flannel", "vxlan", "high")
    assert d.spec == "flannel:vxlan"
    assert d.evidence[0] == "etc/cni/net.d/10-flannel.conflist: plugin type flannel"
    assert "FLANNEL_SUBNET=10.244.1.1/24" in d.evidence[1] and "FLANNEL_MTU=1450" in d.evidence[1]
    assert "flannel.1 -> flannel vxlan" in d.evidence[2]


def test_first_config_file_in_lexical_order_wins_and_broken_ones_are_skipped(tmp_path: Path) -> None:
    root = node_root(tmp_path, {
        "00-broken.conf": "{not json",
        "05-bridge.conf": {"cniVersion": "0.3.1", "name": "mynet", "type": "bridge", "bridge": "cni0"},
        "10-flannel.conflist": FLANNEL_CONFLIST,
        "README": "not a config",
    })
    d = detect.detect(root, links=[LO, ETH0, CNI0, POD_A])
    assert (d.cni, d.mode, d.confidence) == ("bridge", "bridge", "high")
    assert d.evidence[0].startswith("etc/cni/net.d/00-broken.conf: skipped, not valid JSON")
    assert d.evidence[1] == "etc/cni/net.d/05-bridge.conf: plugin type bridge (first of 3 config files)"


def test_flannel_host_gw_from_net_conf_or_from_cni0_without_vtep(tmp_path: Path) -> None:
    root = node_root(tmp_path, {"10-flannel.conflist": FLANNEL_CONFLIST}, SUBNET_ENV, {"Backend": {"Type": "host-gw"}})
    d = detect.detect(root, links=[LO, ETH0, CNI0, POD_A])
    assert (d.cni, d.mode, d.confidence) == ("flannel", "host-gw", "high")
    assert "etc/kube-flannel/net-conf.json: backend host-gw" in d.evidence
    # the same devices without net-conf.json: cni0 and no flannel.1 still say host-gw
    d = detect.decide(None, {"FLANNEL_SUBNET": "10.244.1.1/24"}, None, [LO, ETH0, CNI0, POD_A], "ns")
    assert (d.cni, d.mode) == ("flannel", "host-gw")
    # and without a flannel lease it is the plain bridge plugin
    assert detect.decide(None, {}, None, [LO, ETH0, CNI0, POD_A], "ns").spec == "bridge:bridge"


def test_configured_backend_disagreeing_with_devices_lowers_confidence(tmp_path: Path) -> None:
    root = node_root(tmp_path, {"10-flannel.conflist": FLANNEL_CONFLIST}, SUBNET_ENV, {"Backend": {"Type": "vxlan"}})
    d = detect.detect(root, links=[LO, ETH0, CNI0, POD_A])
    assert (d.cni, d.mode, d.confidence) == ("flannel", "vxlan", "low")
    assert any("devices look like host-gw" in e for e in d.evidence)


@pytest.mark.parametrize(("links", "mode"), [
    ([LO, ETH0, CALI], "bgp"),
    ([LO, ETH0, CALI, TUNL0], "bgp"),  # the ipip module's unaddressed tunl0 is in every namespace: not a mode
    ([LO, ETH0, CALI, link("tunl0", 5, "ipip", ("10.244.1.0/32",))], "ipip"),
    ([LO, ETH0, CALI, VXLAN_CALICO], "vxlan"),
])
def test_calico_modes_from_devices(tmp_path: Path, links: list[Link], mode: str) -> None:
    root = node_root(tmp_path, {"10-calico.conflist": CALICO_CONFLIST})
    d = detect.detect(root, links=links)
    assert (d.cni, d.mode, d.confidence) == ("calico", mode, "high")


def test_cilium_and_macvlan(tmp_path: Path) -> None:
    cilium = [LO, ETH0, link("cilium_host", 3, "veth", ("10.0.0.1/32",), peer_index=4),
              link("cilium_net", 4, "veth", peer_index=3), link("cilium_vxlan", 5, "vxlan")]
    root = node_root(tmp_path / "c", {"05-cilium.conflist": {"name": "cilium", "plugins": [{"type": "cilium-cni"}]}})
    assert detect.detect(root, links=cilium).spec == "cilium:vxlan"
    assert detect.detect(root, links=cilium[:4]).spec == "cilium:native"
    root = node_root(tmp_path / "m", {"10-macvlan.conf": {"name": "m", "type": "macvlan", "master": "eth0",
                                                          "mode": "bridge"}})
    d = detect.detect(root, links=[LO, ETH0])
    assert (d.cni, d.mode, d.confidence) == ("macvlan", "bridge", "medium")  # macvlans live in the pods only


def test_devices_alone_and_configuration_that_contradicts_them() -> None:
    d = detect.decide(None, {}, None, [LO, ETH0, CNI0, FLANNEL1, POD_A], "ns")
    assert (d.cni, d.mode, d.confidence) == ("flannel", "vxlan", "medium")
    conf = detect.CniConfig(Path("10-flannel.conflist"), "flannel", FLANNEL_CONFLIST["plugins"][0])
    d = detect.decide(conf, {}, None, [LO, ETH0, CALI], "ns")
    assert (d.cni, d.confidence) == ("flannel", "low")  # what kubelet runs for new pods, but said to be doubtful
    assert any("configuration says flannel but the devices are calico's" in e for e in d.evidence)
    assert d.mode == "vxlan" and any("assuming flannel's default vxlan" in e for e in d.evidence)


def test_nothing_detected_names_what_was_looked_for(tmp_path: Path) -> None:
    root = node_root(tmp_path, {"99-other.conf": {"name": "x", "type": "weave-net"}})
    d = detect.detect(root, netns="node-x", links=[LO, ETH0])
    assert d.cni is None and d.line() == "no CNI detected"
    assert any("'weave-net' is not one cniprof models" in e for e in d.evidence)
    msg = detect.not_found_message(root, "node-x")
    assert msg.startswith("no CNI detected: looked for ")
    assert f"{root}/etc/cni/net.d/*.conf|*.conflist|*.json" in msg and f"{root}/run/flannel/subnet.env" in msg
    assert "flannel.1, cni0, cali*, vxlan.calico, tunl0, cilium_host, cilium_vxlan devices in namespace node-x" in msg
    assert "\n" not in msg


def test_host_veths_are_peer_veths_without_addresses() -> None:
    assert livenode.host_veths([LO, ETH0, CNI0, FLANNEL1, POD_A, CALI]) == [POD_A, CALI]


def test_underlay_choice() -> None:
    links = [LO, ETH0, CNI0, FLANNEL1, POD_A]
    assert livenode.underlay(links, default_dev=None, pod_veths=[POD_A]) == ETH0  # the VTEP's device
    other = link("eth1", 9, "", ("10.0.0.5/24",))
    assert livenode.underlay([*links, other], default_dev=9, pod_veths=[POD_A]) == other  # default route first
    assert livenode.underlay([LO, ETH0, CNI0, POD_A], None, [POD_A]) == ETH0  # the only addressed uplink
    assert livenode.underlay([LO, ETH0, other, CNI0], None, []) is None  # two candidates: no guess


def test_pod_names() -> None:
    assert livenode.pod_name("cniprof-node1-pod-a", "cniprof-node1") == "pod-a"
    assert livenode.pod_name("cni-1f2e3d4c-aaaa", None) == "cni-1f2e3d4c-aaaa"
    assert livenode.pod_name("/proc/4242/ns/net", None) == "pid-4242"


def test_topology_of_a_detected_node() -> None:
    pod = livenode.PodLink(POD_A, "ns-pod-a", "pod-a", "eth0", 2, "10.244.1.2")
    roles = detect.cni_roles("flannel", "vxlan", [LO, ETH0, CNI0, FLANNEL1, POD_A])
    topo = livenode.topology("flannel", "vxlan", "ns-node", roles, [LO, ETH0, CNI0, FLANNEL1, POD_A], [pod], ETH0)
    node = topo.nodes[0]
    assert [(d.name, d.role) for d in node.devices] == [
        ("eth0", "underlay"), ("cni0", "bridge"), ("flannel.1", "vxlan"), ("veth-pod-a", "host_veth")]
    assert topo.pods[0].host_veth == "veth-pod-a" and topo.pods[0].devices[0].role == "pod_veth"
    assert topo.pods[0].node == node.name == "ns-node"
    assert topo.host_endpoint("ns-node").ip == "192.168.77.1"
    root_topo = livenode.topology("flannel", "vxlan", None, roles, [], [pod], ETH0)
    assert root_topo.nodes[0].netns == livenode.SELF_NETNS  # usable as a path by netns_inode and pyroute2
